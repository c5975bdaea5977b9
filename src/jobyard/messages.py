"""The broker message format: JSON, self-contained, versioned.

A message is ``{"v": 1, "actions": [action, ...]}``; each action carries everything a worker needs
(id, job_id, type, queue, payload, max_attempts, timeout). An outbox row holds either one encoded action (a
retry, a replay: the relay packs such rows into messages without decoding them) or a whole message already
packed at submission (up to ``JOBYARD_MESSAGE_ACTIONS`` actions of one job and queue), published as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from jobyard import jsonutil

VERSION = 1


@dataclass(frozen=True, slots=True)
class ActionMessage:
    id: UUID
    job_id: UUID
    type: str
    queue: str
    payload: Any
    max_attempts: int
    timeout: float
    concurrency_key: str | None = None
    concurrency_limit: int = 1


class MalformedMessage(ValueError):
    """The body is not a jobyard message; it goes to the dead-letter queue with this reason."""


def encode_action(
    action_id: UUID,
    job_id: UUID,
    type_: str,
    queue: str,
    payload: Any,
    max_attempts: int,
    timeout: float,
    concurrency_key: str | None = None,
    concurrency_limit: int = 1,
) -> bytes:
    body = {
        "id": str(action_id),
        "job_id": str(job_id),
        "type": type_,
        "queue": queue,
        "payload": payload,
        "max_attempts": max_attempts,
        "timeout": timeout,
    }
    if concurrency_key is not None:
        body["concurrency_key"] = concurrency_key
        body["concurrency_limit"] = concurrency_limit
    return jsonutil.dumps(body)


def encode_claimed(action: Any) -> bytes:
    """The message body of an action the store handed back (retry, reaper, deferral, replay)."""
    return encode_action(
        action.id,
        action.job_id,
        action.type,
        action.queue,
        action.payload,
        action.max_attempts,
        action.timeout,
        action.concurrency_key,
        action.concurrency_limit,
    )


def pack(encoded_actions: list[bytes]) -> bytes:
    """One message body from already-encoded actions (no re-encoding on the relay's hot path)."""
    return b'{"v":1,"actions":[' + b",".join(encoded_actions) + b"]}"


def is_packed(body: bytes) -> bool:
    """True for a whole message (as packed at submission), False for one encoded action."""
    return body.startswith(b'{"v":')


def pack_by_queue(items: Iterable[tuple[str, bytes]], per_message: int) -> list[tuple[str, bytes]]:
    """Broker messages for (queue, body) pairs: packed bodies go out as they are; single encoded actions are
    grouped by queue, ``per_message`` to a message (the relay's outbox rows, the handoff's submissions)."""
    by_queue: dict[str, list[bytes]] = {}
    out: list[tuple[str, bytes]] = []
    for queue, body in items:
        if is_packed(body):
            out.append((queue, body))
        else:
            by_queue.setdefault(queue, []).append(body)
    for queue, bodies in by_queue.items():
        for start in range(0, len(bodies), per_message):
            out.append((queue, pack(bodies[start : start + per_message])))
    return out


def chunks(queues: list[str], per_message: int) -> list[list[int]]:
    """Indexes of a job's actions grouped by queue (in submission order), at most ``per_message`` per group."""
    by_queue: dict[str, list[int]] = {}
    for index, queue in enumerate(queues):
        by_queue.setdefault(queue, []).append(index)
    return [ids[i : i + per_message] for ids in by_queue.values() for i in range(0, len(ids), per_message)]


def unpack(body: bytes) -> list[ActionMessage]:
    try:
        data = jsonutil.loads(body)
    except jsonutil.JSONDecodeError as exc:
        raise MalformedMessage(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("v") != VERSION or not isinstance(data.get("actions"), list):
        raise MalformedMessage('expected {"v": 1, "actions": [...]}')
    out: list[ActionMessage] = []
    for item in data["actions"]:
        try:
            out.append(
                ActionMessage(
                    id=UUID(item["id"]),
                    job_id=UUID(item["job_id"]),
                    type=str(item["type"]),
                    queue=str(item["queue"]),
                    payload=item.get("payload"),
                    max_attempts=int(item["max_attempts"]),
                    timeout=float(item["timeout"]),
                    concurrency_key=item.get("concurrency_key"),
                    concurrency_limit=int(item.get("concurrency_limit", 1)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessage(f"action entry is invalid: {exc!r}") from exc
    return out
