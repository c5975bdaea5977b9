"""Turning a submission into action specs: registry lookups and defaults, with errors naming the field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from jobyard import jsonutil
from jobyard.config import Settings
from jobyard.errors import PayloadTooLarge, UnknownActionType, ValidationError
from jobyard.model import ActionSpecIn
from jobyard.sdk import Yard


class ActionRequest(Protocol):
    type: str
    payload: Any
    queue: str | None
    max_attempts: int | None
    timeout: float | None
    concurrency_key: str | None
    concurrency_limit: int | None


def build_action_specs(
    yard: Yard, settings: Settings, actions: Sequence[ActionRequest], at: tuple[str | int, ...] = ("body",)
) -> list[ActionSpecIn]:
    """Resolve each requested action against the registry and the limits; raise on the first one at fault.

    ``at`` is where the job sits in the request (``("body", "jobs", 3)`` for the fourth job of a batch): the
    errors' ``loc`` and messages name the field from there."""
    if not actions:
        raise ValidationError("a job needs at least one action", loc=(*at, "actions"))
    if len(actions) > settings.max_actions_per_job:
        raise ValidationError(
            f"a job may have at most {settings.max_actions_per_job} actions (JOBYARD_MAX_ACTIONS_PER_JOB); "
            f"this one has {len(actions)}: split it into several jobs",
            loc=(*at, "actions"),
        )
    specs: list[ActionSpecIn] = []
    for index, request in enumerate(actions):
        if request.payload is not None:
            size = len(jsonutil.dumps(request.payload))
            if size > settings.max_payload_bytes:
                where = ".".join(str(part) for part in (*at, "actions", index, "payload"))
                raise PayloadTooLarge(
                    f"the payload of action {index} ({where}) is {size} bytes of JSON; the "
                    f"limit is {settings.max_payload_bytes} (JOBYARD_MAX_PAYLOAD_BYTES): pass a reference instead"
                )
        try:
            definition = yard.get(request.type)
        except UnknownActionType as exc:
            raise UnknownActionType(exc.message, loc=(*at, "actions", index, "type")) from None
        specs.append(
            ActionSpecIn(
                type=definition.name,
                queue=request.queue or definition.queue,
                payload=request.payload,
                max_attempts=request.max_attempts or definition.max_attempts or settings.default_max_attempts,
                timeout=request.timeout or definition.timeout or settings.default_timeout,
                concurrency_key=request.concurrency_key or definition.key_for(request.payload),
                concurrency_limit=request.concurrency_limit or definition.concurrency_limit,
            )
        )
    return specs


@dataclass(slots=True)
class TemplateAction:
    """One action of a stored job template (a schedule's), in the shape of a submitted one."""

    type: str
    payload: Any = None
    queue: str | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None


def template_actions(template: Mapping[str, Any]) -> list[TemplateAction]:
    """The actions of a stored job template ``{"name", "metadata", "actions": [{"type", "payload", ...}]}``."""
    fields = set(TemplateAction.__dataclass_fields__)
    return [TemplateAction(**{k: v for k, v in a.items() if k in fields}) for a in template.get("actions") or []]
