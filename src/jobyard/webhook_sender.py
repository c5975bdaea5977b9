"""Sends webhook deliveries from the store (run by the leading relay): sign, POST with httpx, record, retry.

Each attempt connects only to addresses the ``TargetGuard`` allowed at that moment: the connection is made to
the vetted address itself, so a host name that changes its DNS answer after the check cannot reach a private
network (TLS still verifies the certificate against the host name).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from jobyard.config import Settings
from jobyard.errors import StoreError
from jobyard.model import retry_delay
from jobyard.store.repository import Repository
from jobyard.webhooks import SIGNATURE_HEADER, TargetGuard, WebhookTargetRefused, sign

log = logging.getLogger("jobyard.webhooks")

MAX_DELAY = 3600.0
BATCH = 50
USER_AGENT = "jobyard-webhooks/1"


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves through the guard and connects to the first allowed address that answers."""

    def __init__(self, guard: TargetGuard) -> None:
        self._guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._guard.resolve(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks never use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, guard: TargetGuard) -> None:
        super().__init__(retries=0)
        # httpx does not take a network backend; its transport's pool is swapped for one that has ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=_GuardedBackend(guard), retries=0
        )


class WebhookSender:
    """``deliver_due()`` sends one batch of due deliveries; ``failures`` counts attempts that did not succeed."""

    def __init__(
        self, settings: Settings, repo: Repository, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.guard = TargetGuard.from_settings(settings.webhook_allow_private, settings.webhook_allow_hosts)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self.failures = 0
        self.delivered = 0
        self.given_up = 0

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=self._transport or _GuardedTransport(self.guard),
                timeout=self.settings.webhook_timeout,
                follow_redirects=False,  # a redirect could point anywhere, past the guard's check
                trust_env=False,  # no proxies from the environment: the guard must see the real target
                headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def deliver_due(self) -> int:
        deliveries = await self.repo.claim_due_deliveries(BATCH, lease=self.settings.webhook_timeout + 30)
        if deliveries:
            await asyncio.gather(*(self._attempt(d) for d in deliveries))
        return len(deliveries)

    async def _attempt(self, delivery: dict[str, Any]) -> None:
        secret = delivery["secret"] if delivery["webhook_id"] is not None else self.settings.webhook_secret
        code: int | None = None
        error: str | None = None
        final_refusal = False
        if secret is None and delivery["webhook_id"] is not None:  # deleted since it was claimed
            error, final_refusal = "the webhook endpoint was deleted", True
        elif secret is None:
            error, final_refusal = "JOBYARD_WEBHOOK_SECRET is not set: a job's webhook cannot be signed", True
        else:
            try:
                response = await self._client().post(
                    delivery["url"],
                    content=delivery["body"],
                    headers={
                        SIGNATURE_HEADER: sign(secret, delivery["body"]),
                        "Jobyard-Event": delivery["event_type"],
                        "Jobyard-Delivery": str(delivery["id"]),
                    },
                )
                code = response.status_code
                if not response.is_success:
                    error = f"HTTP {code}: {response.text[:300]}"
            except WebhookTargetRefused as exc:
                error, final_refusal = str(exc), True
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:1000] or type(exc).__name__
        await self._record(delivery, code, error, final_refusal)

    async def _record(self, delivery: dict[str, Any], code: int | None, error: str | None, refused: bool) -> None:
        attempt = delivery["attempts"]
        if error is None:
            status, delay = "delivered", 0.0
            self.delivered += 1
        elif refused or attempt >= self.settings.webhook_max_attempts:
            status, delay = "failed", 0.0
            self.failures += 1
            self.given_up += 1
            log.warning(
                "webhook %s to %s given up after %d attempts: %s", delivery["id"], delivery["url"], attempt, error
            )
        else:
            status = "pending"
            delay = retry_delay(attempt, self.settings.webhook_retry_base_delay, MAX_DELAY)
            self.failures += 1
            log.info("webhook %s attempt %d failed (%s); next in %.1fs", delivery["id"], attempt, error, delay)
        try:
            await self.repo.record_delivery(
                delivery["id"], attempt, status=status, code=code, error=error, retry_in=delay
            )
        except StoreError as exc:
            # The claim's lease runs out and the delivery is tried again: at least once, never lost.
            log.warning("webhook %s outcome not recorded (%s); it will be retried", delivery["id"], exc)
