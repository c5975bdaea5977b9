"""Live views for the terminal: follow a job over its SSE stream with a bar per action, and `top` for queues.

Both talk to the HTTP API only (rich renders; a dropped stream reconnects with Last-Event-ID).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table

from jobyard.client import auth_headers
from jobyard.errors import ClientError

FINAL = {"succeeded", "failed", "cancelled"}
STYLE = {
    "queued": "dim",
    "pending": "dim",
    "running": "blue",
    "retrying": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}
GLYPH = {
    "queued": "○",
    "pending": "○",
    "running": "◐",
    "retrying": "↻",
    "succeeded": "✓",
    "failed": "✕",
    "cancelled": "⊘",
}


@dataclass
class Event:
    event: str
    data: Any
    id: str | None


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            continue
        if line == "":
            if "data" in fields:
                yield Event(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"))
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


def status_text(status: str) -> str:
    return f"[{STYLE.get(status, '')}]{GLYPH.get(status, '·')} {status}[/]"


class JobBars:
    """A progress bar per action, kept up to date from the job's stream events."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.fields[label]}", style="bold"),
            BarColumn(bar_width=None),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            TextColumn("[dim]{task.fields[note]}"),
            console=console,
            expand=True,
        )
        self.tasks: dict[str, TaskID] = {}

    def _task(self, action_id: str, type_: str = "?") -> TaskID:
        if action_id not in self.tasks:
            label = f"{len(self.tasks) + 1:>3}. {type_}"
            self.tasks[action_id] = self.progress.add_task("", total=100, label=label, status="", note="")
        return self.tasks[action_id]

    def apply(self, event: Event) -> None:
        data = event.data
        if event.event in ("snapshot", "job.final"):
            for action in data.get("actions", []):
                task = self._task(str(action["id"]), action["type"])
                done = 100.0 if action["status"] == "succeeded" else 100.0 * float(action.get("progress") or 0)
                message = "" if action["status"] == "succeeded" else action.get("progress_message")
                note = (action.get("error") or message or "").splitlines()
                self.progress.update(
                    task, completed=done, status=status_text(action["status"]), note=(note or [""])[-1][:60]
                )
        elif event.event == "action.status" and data.get("action_id") in self.tasks:
            task = self.tasks[data["action_id"]]
            fields: dict[str, Any] = {"status": status_text(data["status"])}
            if data["status"] == "succeeded":
                fields["completed"], fields["note"] = 100, ""
            if data["status"] == "running":
                fields["completed"] = 0
            if data.get("error"):
                fields["note"] = str(data["error"]).splitlines()[-1][:60]
            self.progress.update(task, **fields)
        elif event.event == "action.progress" and data.get("action_id") in self.tasks:
            self.progress.update(
                self.tasks[data["action_id"]], completed=100.0 * float(data["progress"]), note=data.get("message") or ""
            )


def follow_job(
    base_url: str, job_id: str, *, timeout: float, console: Console | None = None, api_key: str | None = None
) -> dict[str, Any]:
    """Show the job live until it is final; returns its final status view.

    Raises ``TimeoutError`` when the job is not final in time, or ``ConnectionError`` when the API could not be
    reached at the end of that time (it is retried until then).
    """
    console = console or Console()
    bars = JobBars(console)
    deadline = time.monotonic() + timeout
    last_id: str | None = None
    unreachable: httpx.TransportError | None = None
    with httpx.Client(base_url=base_url, headers=auth_headers(api_key)) as http, bars.progress:
        while (left := deadline - time.monotonic()) > 0:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            # A quiet stream (only heartbeats, every JOBYARD_STREAM_HEARTBEAT seconds) must not outlast the deadline.
            timeouts = httpx.Timeout(10.0, read=min(60.0, left))
            try:
                with http.stream("GET", f"/api/jobs/{job_id}/events", headers=headers, timeout=timeouts) as response:
                    unreachable = None
                    if response.is_error:
                        response.read()
                        raise ClientError(response.status_code, response.json().get("detail", response.text))
                    for event in parse_sse(response.iter_lines()):
                        last_id = event.id or last_id
                        bars.apply(event)
                        if event.event == "job.final":
                            final: dict[str, Any] = event.data
                            return final
                        if time.monotonic() > deadline:
                            break
            except httpx.ReadTimeout as exc:
                if time.monotonic() < deadline:  # no event nor heartbeat for a minute: the API is stuck
                    unreachable = exc
            except httpx.TransportError as exc:
                unreachable = exc
                # The API restarted or the network blipped: resume after the last event, within the deadline.
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    if unreachable is not None:
        raise ConnectionError(f"{unreachable} (job {job_id} followed for {timeout:g}s)") from unreachable
    raise TimeoutError(f"job {job_id} not final after {timeout:g}s")


def top_frame(http: httpx.Client) -> Group:
    """One screen of `jobyard top`: jobs by status, queues with depth and throughput, workers."""
    counts = http.get("/api/job-counts").json()
    queues = http.get("/api/queues", params={"history": 30}).json()
    workers = http.get("/api/workers").json()["workers"]
    summary = "  ".join(f"{status_text(k)} [bold]{v}[/]" for k, v in counts.items())
    qt = Table(title="queues", expand=True, title_justify="left")
    for column in ("queue", "depth", "consumers", "concurrency", "running", "finished/s (1 min)", "last minute"):
        qt.add_column(column, justify="left" if column in ("queue", "last minute") else "right")
    for q in queues["queues"]:
        done = [s["done"].get(q["name"], 0) for s in queues["history"]]
        qt.add_row(
            q["name"], str(q["depth"] if q["depth"] is not None else "?"), str(q["consumers"]), str(q["concurrency"]),
            str(q["running"]), f"{q['rate_per_s']:.2f}", sparkline(done),
        )  # fmt: skip
    wt = Table(title="workers", expand=True, title_justify="left")
    for column in ("worker", "queues", "busy", "processed", "heartbeat"):
        wt.add_column(column, justify="right" if column in ("busy", "processed", "heartbeat") else "left")
    for w in workers:
        wt.add_row(
            w["id"], ",".join(w.get("queues", [])), f"{w.get('running_count', 0)}/{w.get('concurrency', 0)}",
            str(w.get("processed", 0)), f"{time.time() - float(w.get('ts', time.time())):.1f}s ago",
        )  # fmt: skip
    return Group(summary, qt, wt)


def sparkline(values: list[int]) -> str:
    ticks = "▁▂▃▄▅▆▇█"
    top = max(values, default=0)
    if top == 0:
        return "▁" * len(values)
    return "".join(ticks[min(len(ticks) - 1, int(v * (len(ticks) - 1) / top))] for v in values)


def run_top(
    base_url: str, *, interval: float, once: bool, console: Console | None = None, api_key: str | None = None
) -> None:
    console = console or Console()
    with httpx.Client(base_url=base_url, timeout=10.0, headers=auth_headers(api_key)) as http:
        if once:
            console.print(top_frame(http))
            return
        with Live(top_frame(http), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(top_frame(http))
