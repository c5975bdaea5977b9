"""HTTP clients for the jobyard API: ``Client`` for scripts and the CLI, ``AsyncClient`` for async code.

with Client("http://127.0.0.1:8000") as client:
    job_id = client.submit([{"type": "demo.sleep", "payload": {"seconds": 2}}])
    final = client.wait(job_id, timeout=60)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx

from jobyard.errors import ClientError

FINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
#: The largest body ``AsyncClient`` makes of submissions it coalesces (the API's default limit is 10 MiB).
COALESCED_BODY_BYTES = 1024 * 1024
_JSON = {"Content-Type": "application/json"}


def _job_body(actions: list[dict[str, Any]], name: str | None, metadata: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"actions": actions}
    if name is not None:
        body["name"] = name
    if metadata is not None:
        body["metadata"] = metadata
    return body


def _encoded(body: Any) -> bytes:
    """JSON as httpx's ``json=`` writes it, so a body sent as ``content=`` is the same bytes."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@dataclass(slots=True)
class _Waiting:
    """A ``submit()`` waiting for a free request: its job's body and the caller's future."""

    body: bytes
    future: asyncio.Future[str]


def _checked(response: httpx.Response) -> Any:
    if response.is_error:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise ClientError(response.status_code, detail)
    return response.json() if response.content else None


def _page_params(limit: int, filters: dict[str, str | None]) -> dict[str, Any]:
    """A list endpoint's query: the page size and the filters that were given (a None or empty one is left out)."""
    return {"limit": limit, **{name: value for name, value in filters.items() if value}}


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = auth_headers(api_key)
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        actions: list[dict[str, Any]],
        *,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Submit a job; returns its id as soon as the API stored it."""
        data = _checked(self._http.post("/api/jobs", json=_job_body(actions, name, metadata)))
        return str(data["id"])

    def submit_many(self, jobs: list[dict[str, Any]], *, idempotency_key: str | None = None) -> list[str]:
        """Submit several jobs in one request, stored together or not at all; their ids, in order.

        Each job is a ``POST /api/jobs`` body: ``{"actions": [...], "name": ..., "metadata": ...}``. At most
        ``JOBYARD_MAX_JOBS_PER_BATCH`` (1,000 by default) a call. With ``idempotency_key``, sending the same jobs
        again (after a timeout, say) returns the same ids instead of submitting them twice.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        data = _checked(self._http.post("/api/jobs:batch", json={"jobs": jobs}, headers=headers))
        return [str(job["id"]) for job in data["jobs"]]

    def jobs(
        self, *, status: str | None = None, search: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """A page of jobs, newest first: ``{"items": [...], "next_cursor": id | None}``.

        ``status`` keeps one status (``pending``, ``running``, ``succeeded``, ``failed``, ``cancelled``); ``search``
        is a job id or text the name contains; pass the page's ``next_cursor`` back as ``cursor`` for the next one.
        """
        return self._page("/api/jobs", limit, status=status, q=search, cursor=cursor)

    def _page(self, path: str, limit: int, **filters: str | None) -> dict[str, Any]:
        page: dict[str, Any] = _checked(self._http.get(path, params=_page_params(limit, filters)))
        return page

    def status(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _checked(self._http.get(f"/api/jobs/{job_id}/status"))
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _checked(self._http.get(f"/api/jobs/{job_id}"))
        return result

    def result(self, action_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _checked(self._http.get(f"/api/results/{action_id}"))
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job: waiting actions at once, running ones are asked to stop."""
        result: dict[str, Any] = _checked(self._http.post(f"/api/jobs/{job_id}/cancel"))
        return result

    def retry(self, action_id: str) -> dict[str, Any]:
        """Run a failed action once more."""
        result: dict[str, Any] = _checked(self._http.post(f"/api/actions/{action_id}/retry"))
        return result

    def replay(self, action_id: str, max_attempts: int | None = None) -> dict[str, Any]:
        """Replay a dead letter with a fresh attempt budget."""
        body = {"max_attempts": max_attempts} if max_attempts else None
        result: dict[str, Any] = _checked(self._http.post(f"/api/dead-letters/{action_id}/replay", json=body))
        return result

    def dead_letters(self, *, queue: str | None = None, type_: str | None = None, limit: int = 100) -> list[Any]:
        items: list[Any] = self._page("/api/dead-letters", limit, queue=queue, type=type_)["items"]
        return items

    def create_schedule(self, schedule: dict[str, Any]) -> dict[str, Any]:
        """Create a schedule: ``{"name", "cron" | "every", "job": {"actions": [...]}, "missed", "timezone"}``."""
        result: dict[str, Any] = _checked(self._http.post("/api/schedules", json=schedule))
        return result

    def schedules(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = _checked(self._http.get("/api/schedules"))["items"]
        return items

    def pause_schedule(self, schedule_id: str, *, paused: bool = True) -> dict[str, Any]:
        verb = "pause" if paused else "resume"
        result: dict[str, Any] = _checked(self._http.post(f"/api/schedules/{schedule_id}/{verb}"))
        return result

    def delete_schedule(self, schedule_id: str) -> None:
        _checked(self._http.delete(f"/api/schedules/{schedule_id}"))

    def create_webhook(
        self, url: str, *, events: list[str] | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """Register an endpoint for the tenant's domain events (``job.completed`` by default); the answer carries its
        signing ``secret``, which is shown this once."""
        body: dict[str, Any] = {"url": url, "description": description}
        if events:
            body["events"] = events
        result: dict[str, Any] = _checked(self._http.post("/api/webhooks", json=body))
        return result

    def webhooks(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = _checked(self._http.get("/api/webhooks"))["items"]
        return items

    def set_webhook_active(self, webhook_id: str, active: bool) -> dict[str, Any]:
        result: dict[str, Any] = _checked(self._http.patch(f"/api/webhooks/{webhook_id}", json={"active": active}))
        return result

    def delete_webhook(self, webhook_id: str) -> None:
        _checked(self._http.delete(f"/api/webhooks/{webhook_id}"))

    def webhook_deliveries(
        self, *, status: str | None = None, webhook_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        """A page of the delivery log, newest first: ``{"items": [...], "next_cursor": id | None}``."""
        return self._page("/api/webhooks/deliveries", limit, status=status, webhook_id=webhook_id, cursor=cursor)

    def wait(self, job_id: str, *, timeout: float = 300.0, interval: float = 0.2) -> dict[str, Any]:
        """Poll until the job is final; returns its last status. Raises ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status["status"] in FINAL_JOB_STATUSES:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {status['status']} after {timeout:g}s")
            time.sleep(interval)


class AsyncClient:
    """The async client. Concurrent ``submit()`` calls are coalesced: at most ``submit_in_flight`` submit requests
    are in flight at once, and the calls made meanwhile go out together, as one ``POST /api/jobs:batch`` of up to
    ``submit_batch_max`` jobs, as soon as one of them returns.

    So ``await asyncio.gather(*(client.submit(...) for device in devices))`` sends a few requests rather than one
    per job, while a lone ``submit()`` still goes out at once as ``POST /api/jobs``. Each call still gets its own
    job and id, and the answer its own request would have had: a batch the API refuses as a whole (a job at fault,
    a quota, a body over the limit; the API stores none of a refused batch) is sent again one job a request. An
    error with no answer (the connection failed, a 5xx) goes to every call of that request, as it would to each of
    their own. ``submit_in_flight=0``: every call its own request, at once.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        submit_in_flight: int = 2,
        submit_batch_max: int = 100,
    ) -> None:
        if submit_in_flight < 0 or submit_batch_max < 1:
            raise ValueError("submit_in_flight must be 0 or more and submit_batch_max 1 or more")
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=auth_headers(api_key), timeout=timeout, transport=transport
        )
        self._submit_limit = submit_in_flight
        self._batch_max = submit_batch_max
        self._submitting = 0  # submit requests in flight
        self._waiting: deque[_Waiting] = deque()
        self._senders: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._senders:  # coalesced submissions in flight: their callers get their answers
            await asyncio.gather(*self._senders, return_exceptions=True)
        await self._http.aclose()

    async def submit(
        self,
        actions: list[dict[str, Any]],
        *,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Submit a job; returns its id as soon as the API stored it (coalesced with concurrent calls, see above)."""
        body = _encoded(_job_body(actions, name, metadata))
        if self._submit_limit == 0:
            return await self._submit_alone(body)
        if self._submitting < self._submit_limit and not self._waiting:
            self._submitting += 1
            try:
                return await self._submit_alone(body)
            finally:
                self._submitting -= 1
                self._send_waiting()
        waiting = _Waiting(body, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._send_waiting()  # a request may have returned since (its sender ran before this call)
        return await waiting.future  # cancelled while it waits: its future is too, and it is never sent

    async def _submit_alone(self, body: bytes) -> str:
        data = _checked(await self._http.post("/api/jobs", content=body, headers=_JSON))
        return str(data["id"])

    def _send_waiting(self) -> None:
        """Send what waits, as far as the requests in flight allow: each request takes the oldest calls."""
        while self._waiting and self._submitting < self._submit_limit:
            batch: list[_Waiting] = []
            size = 0
            while self._waiting and len(batch) < self._batch_max:
                head = self._waiting[0]
                if head.future.done():  # its caller was cancelled
                    self._waiting.popleft()
                    continue
                if batch and size + len(head.body) > COALESCED_BODY_BYTES:
                    break
                batch.append(self._waiting.popleft())
                size += len(head.body) + 1
            if not batch:
                return
            self._submitting += 1
            sender = asyncio.get_running_loop().create_task(self._send(batch))
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            if len(batch) == 1:
                await _settle(batch[0], self._submit_alone(batch[0].body))
            else:
                await self._send_batch(batch)
        except BaseException:  # cancelled (the loop is closing): no caller is left waiting for ever
            for waiting in batch:
                waiting.future.cancel()
            raise
        finally:
            self._submitting -= 1
            self._send_waiting()

    async def _send_batch(self, batch: list[_Waiting]) -> None:
        try:
            content = b'{"jobs":[' + b",".join(w.body for w in batch) + b"]}"
            response = await self._http.post("/api/jobs:batch", content=content, headers=_JSON)
            refused = 400 <= response.status_code < 500
            ids = [] if refused else [str(job["id"]) for job in _checked(response)["jobs"]]
            if not refused and len(ids) != len(batch):
                raise ClientError(response.status_code, f"{len(ids)} jobs accepted of the {len(batch)} sent")
        except Exception as exc:  # no answer, or a 5xx: every call of the request gets the error
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        if refused:  # nothing of it was stored: each job alone gets the answer it would have had
            await asyncio.gather(*(_settle(w, self._submit_alone(w.body)) for w in batch if not w.future.done()))
            return
        for waiting, job_id in zip(batch, ids, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(job_id)

    async def submit_many(self, jobs: list[dict[str, Any]], *, idempotency_key: str | None = None) -> list[str]:
        """As ``Client.submit_many``: several jobs in one request, stored together or not at all."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        data = _checked(await self._http.post("/api/jobs:batch", json={"jobs": jobs}, headers=headers))
        return [str(job["id"]) for job in data["jobs"]]

    async def jobs(
        self, *, status: str | None = None, search: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """As ``Client.jobs``: a page of jobs, newest first, ``{"items": [...], "next_cursor": id | None}``."""
        params = _page_params(limit, {"status": status, "q": search, "cursor": cursor})
        page: dict[str, Any] = _checked(await self._http.get("/api/jobs", params=params))
        return page

    async def status(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _checked(await self._http.get(f"/api/jobs/{job_id}/status"))
        return result

    async def result(self, action_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _checked(await self._http.get(f"/api/results/{action_id}"))
        return result

    async def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _checked(await self._http.post(f"/api/jobs/{job_id}/cancel"))
        return result

    async def wait(self, job_id: str, *, timeout: float = 300.0, interval: float = 0.2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(job_id)
            if status["status"] in FINAL_JOB_STATUSES:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {status['status']} after {timeout:g}s")
            await asyncio.sleep(interval)


async def _settle(waiting: _Waiting, submission: Any) -> None:
    """Give ``waiting``'s caller the outcome of ``submission`` (unless it was cancelled meanwhile)."""
    try:
        job_id = await submission
    except Exception as exc:
        if not waiting.future.done():
            waiting.future.set_exception(exc)
        return
    if not waiting.future.done():
        waiting.future.set_result(job_id)
