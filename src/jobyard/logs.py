"""Logging set-up: text or one JSON object per line (``JOBYARD_LOG_FORMAT=json``), with the job and action an
action's task is working on (context variables set by the worker) on every record it logs.
"""

from __future__ import annotations

import contextvars
import logging
from datetime import UTC, datetime
from typing import Any

from jobyard import jsonutil

# The ids as given (UUIDs), turned into text only for a record that is logged: most actions log nothing.
job_id_var: contextvars.ContextVar[object | None] = contextvars.ContextVar("jobyard_job_id", default=None)
action_id_var: contextvars.ContextVar[object | None] = contextvars.ContextVar("jobyard_action_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTEXT_FIELDS = ("job_id", "action_id", "attempt", "worker_id")
# Attributes every LogRecord has; anything else on a record was passed with ``extra=`` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class ContextFilter(logging.Filter):
    """Puts the current job and action ids on each record (unless the record already carries them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("job_id", job_id_var), ("action_id", action_id_var)):
            if getattr(record, name, None) is None:
                value = var.get()
                setattr(record, name, None if value is None else str(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in _CONTEXT_FIELDS and name not in entry and not name.startswith("_"):
                entry[name] = value if isinstance(value, str | int | float | bool) or value is None else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return jsonutil.dumps_str(entry)


def configure(level: str, fmt: str) -> None:
    """Configure the root logger once, at process start-up."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic announces each of its plugins at INFO on every start (seven lines before `jobyard dev` serves); its
    # migrations' own lines ("Running upgrade ...") stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, root.level))


def bind_action(job_id: object, action_id: object) -> None:
    """Mark the current task as working on this action (the worker calls it in each action's own task)."""
    job_id_var.set(job_id)
    action_id_var.set(action_id)
