"""HTTP clients for the jobyard API: ``Client`` for scripts and the CLI, ``AsyncClient`` for async code.

with Client("http://127.0.0.1:8000") as client:
    job_id = client.submit([{"type": "demo.sleep", "payload": {"seconds": 2}}])
    final = client.wait(job_id, timeout=60)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from jobyard.errors import ClientError

FINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def _job_body(actions: list[dict[str, Any]], name: str | None, metadata: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"actions": actions}
    if name is not None:
        body["name"] = name
    if metadata is not None:
        body["metadata"] = metadata
    return body


def _checked(response: httpx.Response) -> Any:
    if response.is_error:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise ClientError(response.status_code, detail)
    return response.json() if response.content else None


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
        params: dict[str, Any] = {"limit": limit}
        if queue:
            params["queue"] = queue
        if type_:
            params["type"] = type_
        items: list[Any] = _checked(self._http.get("/api/dead-letters", params=params))["items"]
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
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=auth_headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(
        self,
        actions: list[dict[str, Any]],
        *,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        data = _checked(await self._http.post("/api/jobs", json=_job_body(actions, name, metadata)))
        return str(data["id"])

    async def submit_many(self, jobs: list[dict[str, Any]], *, idempotency_key: str | None = None) -> list[str]:
        """As ``Client.submit_many``: several jobs in one request, stored together or not at all."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        data = _checked(await self._http.post("/api/jobs:batch", json={"jobs": jobs}, headers=headers))
        return [str(job["id"]) for job in data["jobs"]]

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
