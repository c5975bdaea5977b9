"""The SDK: a ``Yard`` registry of actions and the context every handler receives.

    yard = Yard()

    @yard.action("olt.ping", queue="diagnostics", max_attempts=3, timeout=120)
    async def ping(ctx: ActionContext, payload: dict) -> dict:
        ctx.progress(0.5, "half way")
        return {"rtt_ms": 1.2}

Handlers take ``(ctx, payload)`` or just ``(payload)``; sync handlers run in a thread pool.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from jobyard.errors import ActionCancelled, UnknownActionType, ValidationError

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")

Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class ActionDefinition:
    name: str
    fn: Handler
    queue: str
    max_attempts: int | None
    timeout: float | None
    soft_timeout: float | None
    concurrency_key: str | Callable[[Any], str | None] | None
    concurrency_limit: int
    is_async: bool
    takes_context: bool
    description: str

    def call(self, ctx: ActionContext, payload: Any) -> Any:
        return self.fn(ctx, payload) if self.takes_context else self.fn(payload)

    def key_for(self, payload: Any) -> str | None:
        """This action's concurrency key for a payload (None: no limit)."""
        key = self.concurrency_key(payload) if callable(self.concurrency_key) else self.concurrency_key
        return None if key is None else str(key)[:200]

    def call_in_thread(self, ctx: ActionContext, payload: Any) -> Any:
        ctx.thread_id = threading.get_ident()
        try:
            return self.call(ctx, payload)
        finally:
            ctx.thread_id = None


class Yard:
    """A registry of action types. Build one explicitly and pass it to the worker and the API."""

    def __init__(self, name: str = "jobyard") -> None:
        self.name = name
        self._actions: dict[str, ActionDefinition] = {}
        self._cache: Any = None

    def bind_cache(self, cache: Any) -> None:
        """Called by the worker and the API at start-up with the process's user cache."""
        self._cache = cache

    @property
    def cache(self) -> Any:
        """``await yard.cache.get_or_set(key, fn, ttl)``: the same cache handlers see as ``ctx.cache``."""
        if self._cache is None:
            from jobyard.errors import ConfigurationError

            raise ConfigurationError("yard.cache is available once a worker or the API has started with this Yard")
        return self._cache

    def action(
        self,
        name: str,
        *,
        queue: str = "default",
        max_attempts: int | None = None,
        timeout: float | None = None,
        soft_timeout: float | None = None,
        concurrency_key: str | Callable[[Any], str | None] | None = None,
        concurrency_limit: int = 1,
    ) -> Callable[[Handler], Handler]:
        """Register a handler under a stable type name. ``None`` options use the configured defaults.

        ``timeout`` is the hard limit of one attempt: past it the attempt is abandoned and recorded as timed out.
        ``soft_timeout`` (optional, shorter) interrupts the handler first so it can clean up: async handlers get
        ``asyncio.CancelledError`` at their pending ``await``, sync handlers get ``ActionTimeout`` raised in their
        thread. A handler that returns after the soft limit still succeeds.

        ``concurrency_key`` (a string, or a function of the payload such as ``lambda p: p["device"]``) allows
        at most ``concurrency_limit`` actions with the same key to run at once across all workers; the others
        wait without blocking their queue. A submission may set its own key and limit per action.
        """
        if not _NAME.match(name):
            raise ValidationError(f"action name {name!r} must be 1-200 characters of letters, digits and ._:-")
        if not _NAME.match(queue):
            raise ValidationError(f"queue name {queue!r} must be 1-200 characters of letters, digits and ._:-")
        if max_attempts is not None and max_attempts < 1:
            raise ValidationError("max_attempts must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ValidationError("timeout must be positive (seconds)")
        if concurrency_limit < 1:
            raise ValidationError("concurrency_limit must be at least 1")
        if soft_timeout is not None and (soft_timeout <= 0 or (timeout is not None and soft_timeout >= timeout)):
            raise ValidationError("soft_timeout must be positive and shorter than timeout")

        def register(fn: Handler) -> Handler:
            if name in self._actions:
                raise ValidationError(f"action {name!r} is already registered")
            params = [
                p
                for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            if len(params) not in (1, 2):
                raise ValidationError(f"handler for {name!r} must take (ctx, payload) or (payload)")
            self._actions[name] = ActionDefinition(
                name=name,
                fn=fn,
                queue=queue,
                max_attempts=max_attempts,
                timeout=timeout,
                soft_timeout=soft_timeout,
                concurrency_key=concurrency_key,
                concurrency_limit=concurrency_limit,
                is_async=inspect.iscoroutinefunction(fn),
                takes_context=len(params) == 2,
                description=(inspect.getdoc(fn) or "").split("\n\n")[0],
            )
            return fn

        return register

    def get(self, name: str) -> ActionDefinition:
        try:
            return self._actions[name]
        except KeyError:
            known = ", ".join(sorted(self._actions)) or "none"
            raise UnknownActionType(f"unknown action type {name!r}; registered types: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    @property
    def definitions(self) -> list[ActionDefinition]:
        return [self._actions[k] for k in sorted(self._actions)]

    @property
    def queues(self) -> list[str]:
        return sorted({d.queue for d in self._actions.values()})


class ActionContext:
    """What a handler knows about its attempt, and how it reports back.

    ``progress`` and ``log`` are plain (non-async) calls, safe from async handlers and from sync handlers
    running in threads; progress is coalesced and written to the store a few times a second.
    """

    def __init__(
        self,
        *,
        action_id: UUID,
        job_id: UUID,
        type_: str,
        attempt: int,
        max_attempts: int,
        timeout: float,
        worker_id: str,
        on_progress: Callable[[ActionContext], None] | None = None,
        cache: Any = None,
        lock: Callable[..., Any] | None = None,
    ) -> None:
        self.action_id = action_id
        self.job_id = job_id
        self.type = type_
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.worker_id = worker_id
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None  # built on first use: most never log
        self._on_progress = on_progress
        self._lock_factory = lock
        #: The shared user cache: ``await ctx.cache.get_or_set(key, fn, ttl)``.
        self.cache = cache
        self._lock = threading.Lock()
        self.progress_fraction = 0.0
        self.progress_message: str | None = None
        self.progress_dirty = False
        self.lease_lost = False
        self.soft_timed_out = False
        self.thread_id: int | None = None  # set while a sync handler runs, to interrupt it
        # Set once, read from the handler's thread too: a plain attribute (the GIL makes both atomic), because a
        # threading.Event per attempt cost a Condition and a lock for a flag that is almost never raised.
        self._cancelled = False

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the job id, the action id and the attempt."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                logging.getLogger(f"jobyard.action.{self.type}"),
                {"job_id": str(self.job_id), "action_id": str(self.action_id), "attempt": self.attempt},
            )
        return self._logger

    @property
    def idempotency_key(self) -> str:
        """Stable for this attempt: ``{action_id}:{attempt}``. Use it to make side effects idempotent."""
        return f"{self.action_id}:{self.attempt}"

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress between 0 and 1 (clamped), with an optional short message."""
        with self._lock:
            self.progress_fraction = min(1.0, max(0.0, float(fraction)))
            self.progress_message = None if message is None else str(message)[:500]
            self.progress_dirty = True
        if self._on_progress is not None:
            self._on_progress(self)

    def take_progress(self) -> tuple[float, str | None] | None:
        with self._lock:
            if not self.progress_dirty:
                return None
            self.progress_dirty = False
            return self.progress_fraction, self.progress_message

    def lock(self, name: str, *, ttl: float = 30.0, wait: float = 60.0) -> Any:
        """``async with ctx.lock("olt:olt-001", ttl=30) as lock:`` — one holder at a time across all workers.

        ``lock.fence`` grows with every holder: pass it to the resource you protect so a late holder is refused.
        Leaving the block raises ``LockLost`` if the lock expired while held.
        """
        if self._lock_factory is None:
            raise RuntimeError("locks are available inside a running worker")
        return self._lock_factory(name, ttl=ttl, wait=wait)

    def log(self, message: str, *args: Any, level: int = logging.INFO) -> None:
        self.logger.log(level, message, *args)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def check_cancelled(self) -> None:
        """Raise ``ActionCancelled`` if the job was cancelled; call it between steps of long work."""
        if self._cancelled:
            raise ActionCancelled(f"action {self.action_id} was cancelled")


def load_yard(spec: str | None) -> Yard:
    """Import ``module:object``; the default is the bundled demo actions."""
    import importlib
    import os
    import sys

    from jobyard.errors import ConfigurationError

    spec = spec or "jobyard.demo:yard"
    # Like uvicorn: the working directory is importable, so `JOBYARD_APP=myapp:yard jobyard dev` just works.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"JOBYARD_APP={spec!r}: cannot import {module_name!r}: {exc}") from exc
    yard = getattr(module, attr or "yard", None)
    if not isinstance(yard, Yard):
        raise ConfigurationError(f"JOBYARD_APP={spec!r}: {attr or 'yard'!r} in {module_name!r} is not a jobyard.Yard")
    return yard
