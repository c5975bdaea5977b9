"""The `jobyard` command: run the processes (dev, api, worker, relay), migrate, submit and inspect jobs.

Every flag also reads a ``JOBYARD_*`` environment variable; flags win.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import shlex
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobyard.cli_keys import keys_app
from jobyard.config import Settings, set_process_name
from jobyard.errors import ClientError, ConfigurationError, JobyardError, StoreError, StoreUnavailable
from jobyard.model import JobStatus

if TYPE_CHECKING:
    from jobyard.sdk import Yard

app = typer.Typer(
    name="jobyard",
    help="Asynchronous jobs of many actions, with live status.",
    no_args_is_help=True,
    add_completion=False,
)

app.add_typer(keys_app)


@app.callback()
def _name_the_process(ctx: typer.Context) -> None:
    # Every command's database connections carry its name (pg_stat_activity shows ``jobyard-worker`` and so on).
    if ctx.invoked_subcommand:
        set_process_name(f"jobyard-{ctx.invoked_subcommand}")


Host = Annotated[str | None, typer.Option("--host", envvar="JOBYARD_HOST", help="address to bind")]
Port = Annotated[int | None, typer.Option("--port", envvar="JOBYARD_PORT", help="port to bind")]
ApiUrl = Annotated[str, typer.Option("--url", envvar="JOBYARD_URL", help="the jobyard API to talk to")]
MetricsPort = Annotated[
    int | None,
    typer.Option("--metrics-port", envvar="JOBYARD_METRICS_PORT", help="serve Prometheus metrics on this port"),
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="JOBYARD_API_KEY", help="API key (when the API requires keys)")
]


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except ConfigurationError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from exc


def _logging(settings: Settings) -> None:
    from jobyard.logs import configure

    configure(settings.log_level, settings.log_format)


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop when installed (faster I/O), else the default loop."""
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    _settle_heap()  # what is imported so far; the services call it again once they have started
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())
    except JobyardError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc


def _settle_heap(young_threshold: int = 0) -> None:
    """Move everything alive now out of the garbage collector's sight: it lives as long as the process.

    Called before the event loop starts and again once a service has started (its pools, clients, compiled
    statements and the modules it imported on the way). Otherwise every full collection walks all of that: pauses
    of 55-160 ms in a busy worker or relay, against 0.5-11 ms once settled (benchmarks/RESULTS.md,
    "the worker's per-action bookkeeping, and the collector's pauses", 2026-11-30 03:29).

    ``young_threshold`` (``JOBYARD_GC_YOUNG_THRESHOLD`` in workers and relays, when not 0) is how many new objects
    the youngest generation takes before it is collected. CPython before 3.13 collects it every 700, so in a busy
    worker the objects of actions still in flight (messages, futures, rows) are found alive and moved to the older
    generations, whose collections then walk them again. At 2,000, the value of CPython 3.13 and later, most of them
    are gone when the collector looks: the collector's CPU in a busy worker halves, and the full collections while it
    works stop (benchmarks/RESULTS.md, "the collector's youngest generation", 2026-12-01 12:30).
    """
    gc.collect()
    gc.freeze()
    if young_threshold:
        gc.set_threshold(young_threshold, *gc.get_threshold()[1:])


async def _until_signalled(stop: Callable[[], Awaitable[None]]) -> None:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    await event.wait()
    await stop()


def _preflight(settings: Settings, *, migrate: bool) -> None:
    """Refuse to start before binding: the store is unreachable, or the auth policy forbids serving (the lifespan
    checks both again). One line and exit 2, not the traceback of a failed start-up."""
    from jobyard.api.auth import auth_policy_problem, is_loopback

    check_policy = settings.auth == "auto" and not is_loopback(settings.host)

    async def main() -> None:
        from jobyard.store import create_repository

        repo = create_repository(settings)
        problem = None
        try:
            if not check_policy:
                await repo.ping()
            else:
                if migrate:
                    await repo.migrate()
                problem = auth_policy_problem(settings, await repo.any_active_api_key())
        finally:
            await repo.close()
        if problem is not None:
            raise ConfigurationError(problem)

    try:
        asyncio.run(main())
    except JobyardError as exc:
        unmigrated = isinstance(exc, StoreError) and not isinstance(exc, StoreUnavailable)
        hint = " (has `jobyard migrate` run?)" if unmigrated else ""
        typer.secho(f"error: {exc}{hint}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _ready_to_serve(settings: Settings, *, migrate: bool) -> Yard:
    """The app's yard, once ``_preflight`` passed; a refusal or an app that does not load exits with 2."""
    from jobyard.sdk import load_yard

    _preflight(settings, migrate=migrate)
    try:
        return load_yard(settings.app)
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _serve(settings: Settings, yard: Yard, *, embedded: bool, migrate: bool) -> None:
    import uvicorn

    from jobyard.api import create_app
    from jobyard.api.server import JoinedWritesProtocol

    application = create_app(settings, yard, embedded=embedded, migrate=migrate)
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        http=JoinedWritesProtocol,  # a response's head and body in one write (jobyard.api.server)
        ws="websockets-sansio",  # the maintained websockets implementation (the legacy one is deprecated)
        lifespan="on",
        # uvicorn's 5 s default closes idle keep-alive connections while clients (and proxies such as nginx with
        # its 60 s upstream keep-alive) still reuse them, which surfaces as dropped requests under load.
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    _run(lambda: _serve_and_settle(server))


async def _serve_and_settle(server: Any) -> None:
    """Run a uvicorn server; once its start-up (the lifespan: pools, caches, services) is done, settle the heap.

    The API keeps the interpreter's own young-generation threshold: with 2,000 its status reads' p99 was 2.4-7.6 ms
    against 1.7-5.5 with 700, nine runs of each (benchmarks/RESULTS.md, "the collector's youngest generation"). Thin
    evidence on a noisy machine, but the API had little to gain (its collector's CPU is a few percent of its own).
    """
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.05)
    if server.started:
        _settle_heap()
    await serving


@app.command()
def dev(host: Host = None, port: Port = None) -> None:
    """Run API, relay and worker in one process (embedded SQLite, in-process broker and cache by default)."""
    settings = _settings(host=host, port=port)
    _logging(settings)
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    yard = _ready_to_serve(settings, migrate=True)  # refusals come before the banner
    typer.secho(f"jobyard dev: http://{shown_host}:{settings.port}  (API docs at /docs)", fg="green")
    typer.echo(f"  database {settings.database_url}  broker {settings.broker_url}  redis {settings.redis_url}")
    _serve(settings, yard, embedded=True, migrate=True)


@app.command()
def api(
    host: Host = None,
    port: Port = None,
    migrate: Annotated[bool, typer.Option(help="upgrade the schema before serving")] = False,
) -> None:
    """Serve the HTTP API."""
    settings = _settings(host=host, port=port)
    _logging(settings)
    _serve(settings, _ready_to_serve(settings, migrate=migrate), embedded=False, migrate=migrate)


@app.command()
def worker(
    queues: Annotated[
        list[str] | None,
        typer.Option("-Q", "--queue", help="queue to consume (repeat; default: all of the app's)"),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("-c", "--concurrency", envvar="JOBYARD_WORKER_CONCURRENCY", help="actions at once"),
    ] = None,
    grace: Annotated[float, typer.Option(help="seconds running actions get to finish on SIGTERM")] = 30.0,
    metrics_port: MetricsPort = None,
) -> None:
    """Run actions from the given queues."""
    settings = _settings(worker_concurrency=concurrency, metrics_port=metrics_port)
    _logging(settings)

    async def main() -> None:
        from jobyard.runtime import Runtime
        from jobyard.sdk import load_yard
        from jobyard.worker import Worker

        yard = load_yard(settings.app)
        runtime = Runtime(settings)
        await runtime.start()
        if settings.metrics_port:
            runtime.metrics.serve(settings.metrics_port)
        names = [q for item in queues or [] for q in item.split(",") if q]
        service = Worker(
            settings=settings,
            repo=runtime.repo,
            broker=runtime.broker,
            results=runtime.results,
            events=runtime.events,
            yard=yard,
            queues=names or None,
            metrics=runtime.metrics,
        )
        await service.start()
        _settle_heap(settings.gc_young_threshold)

        async def stop() -> None:
            await service.stop(grace=grace)
            await runtime.close()

        await _until_signalled(stop)

    _run(main)


@app.command()
def relay(metrics_port: MetricsPort = None) -> None:
    """Publish the outbox to the broker; the leading relay also reaps, fires schedules, sends events and webhooks,
    and prunes old jobs."""
    settings = _settings(metrics_port=metrics_port)
    _logging(settings)

    async def main() -> None:
        from jobyard.relay import Relay
        from jobyard.runtime import Runtime
        from jobyard.sdk import load_yard

        yard = load_yard(settings.app)  # schedules resolve their actions against the app
        runtime = Runtime(settings)
        await runtime.start()
        if settings.metrics_port:
            runtime.metrics.serve(settings.metrics_port)
        service = Relay(
            settings=settings,
            repo=runtime.repo,
            broker=runtime.broker,
            events=runtime.events,
            yard=yard,
            metrics=runtime.metrics,
        )
        await service.start()
        _settle_heap(settings.gc_young_threshold)

        async def stop() -> None:
            await service.stop()
            await runtime.close()

        await _until_signalled(stop)

    _run(main)


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    settings = _settings()
    _logging(settings)

    async def main() -> None:
        from jobyard.store import create_repository

        repo = create_repository(settings)
        try:
            await repo.migrate()
        finally:
            await repo.close()
        typer.echo(f"schema is up to date ({settings.database_url.split('@')[-1]})")

    _run(main)


def _client(url: str, api_key: str | None) -> Any:
    from jobyard.client import Client

    return Client(url, api_key=api_key)


def _print_status(status: dict[str, Any]) -> None:
    progress = status["progress"]
    typer.echo(f"job {status['id']}: {status['status']}  {progress['percent']:.0f}%  "
               f"({progress['succeeded']} succeeded, {progress['failed']} failed of {progress['total']})")  # fmt: skip
    for action in status["actions"]:
        line = f"  {action['id']}  {action['status']:<10} {action['type']:<28} attempts={action['attempts']}"
        if action.get("error"):
            line += f"  error: {action['error'].splitlines()[0][:100]}"
        typer.echo(line)


def _print_final(status: dict[str, Any]) -> None:
    """A final status as ``_print_status`` shows it; exit 1 unless the job succeeded (for scripts: ``&&``)."""
    _print_status(status)
    if status["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def submit(
    action_type: Annotated[str, typer.Argument(metavar="TYPE", help="a registered action type")],
    payload: Annotated[str | None, typer.Option(help="JSON payload")] = None,
    count: Annotated[int, typer.Option(min=1, help="number of actions of this type in the job")] = 1,
    name: Annotated[str | None, typer.Option(help="a name for the job")] = None,
    wait: Annotated[
        bool, typer.Option(help="wait until the job is final and show its status; then exit 1 unless it succeeded")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait (then exit 1)")] = 300.0,
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Submit a job of COUNT actions of TYPE; prints the job id."""
    data = _payload(payload)
    with _api_errors(url):
        with _client(url, api_key) as client:
            job_id = client.submit([{"type": action_type, "payload": data}] * count, name=name)
            typer.echo(job_id)
        if wait:
            from jobyard.cli_live import follow_job

            _print_final(follow_job(url, job_id, timeout=timeout, api_key=api_key))


@app.command()
def status(
    job_id: str,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="follow live, a progress bar per action, until the job is final; then exit 1 unless it succeeded",
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds to follow at most (then exit 1)")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's answer as JSON (not with --follow)")] = False,
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Show a job's status, progress and each action's id and state (live with --follow)."""
    if follow and as_json:
        raise typer.BadParameter("--json shows one reading; it does not go with --follow", param_hint="--json")
    with _api_errors(url):
        if follow:
            from jobyard.cli_live import follow_job

            _print_final(follow_job(url, job_id, timeout=timeout, api_key=api_key))
            return
        with _client(url, api_key) as client:
            answer = client.status(job_id)
        if as_json:
            _print_json(answer)
        else:
            _print_status(answer)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


@app.command()
def result(action_id: str, url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """Print an action's result as JSON; exit 1 while it has none (not succeeded), saying why."""
    answer = _call_api(url, api_key, lambda c: c.result(action_id))
    if answer["status"] != "succeeded":
        reason = f": {answer['error'].splitlines()[0]}" if answer.get("error") else ": no result yet"
        typer.echo(f"action {action_id} is {answer['status']}{reason}", err=True)
        raise typer.Exit(1)
    _print_json(answer["result"])


def _when(stamp: str | None) -> str:
    """An API timestamp to the second, as the terminal shows it (``2026-12-02 05:48:37``, UTC)."""
    if not stamp:
        return "-"
    from datetime import UTC, datetime

    return datetime.fromisoformat(stamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def jobs(
    status: Annotated[JobStatus | None, typer.Option(case_sensitive=False, help="only jobs with this status")] = None,
    search: Annotated[str | None, typer.Option(help="a job id, or text the job's name contains")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="most jobs to show")] = 20,
    cursor: Annotated[str | None, typer.Option(help="go on from here (the id a previous page ended with)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's page as JSON")] = False,
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """List jobs, newest first: status, progress, when each was created (UTC) and its name."""
    wanted = status.value if status else None
    page = _call_api(url, api_key, lambda c: c.jobs(status=wanted, search=search, limit=limit, cursor=cursor))
    if as_json:
        _print_json(page)
        return
    _print_each(page["items"], _print_job, f"no {wanted} jobs" if wanted else "no jobs")
    if page["next_cursor"]:  # on stderr: the list on stdout stays one job a line, for scripts
        more = [f"--status {wanted}"] if wanted else []
        more += [f"--search {shlex.quote(search)}"] if search else []
        more += [f"--limit {limit}", f"--cursor {page['next_cursor']}"]
        typer.echo(f"more: jobyard jobs {' '.join(more)}", err=True)


def _print_job(job: dict[str, Any]) -> None:
    counters = job["counters"]
    done = f"{counters['succeeded']}/{counters['total']} succeeded"
    if counters["failed"]:
        done += f", {counters['failed']} failed"
    if counters["cancelled"]:
        done += f", {counters['cancelled']} cancelled"
    line = f"{job['id']}  {job['status']:<10} {counters['percent']:>3.0f}%  {_when(job['created_at'])}  {done:<28}"
    typer.echo(f"{line} {job.get('name') or ''}".rstrip())


def _payload(payload: str | None) -> Any:
    """The ``--payload`` option as JSON (None when absent); exit 2 with the parser's message when malformed."""
    try:
        return json.loads(payload) if payload is not None else None
    except json.JSONDecodeError as exc:
        typer.secho(f"--payload is not valid JSON: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


@contextlib.contextmanager
def _api_errors(url: str) -> Iterator[None]:
    """A call of the API that fails ends the command with one line and exit 1: the API's refusal, or a follow that
    ran out of time (``TimeoutError``, the API answered), as they are; an API that cannot be reached with a hint."""
    import httpx  # here, not at the top: a worker process (started by this CLI) never needs it

    try:
        yield
    except (ClientError, TimeoutError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    except (OSError, httpx.HTTPError) as exc:  # httpx's transport errors are not OSErrors
        typer.secho(f"error: {exc} (is the API running at {url}?)", fg="red", err=True)
        raise typer.Exit(1) from exc


def _call_api(url: str, api_key: str | None, call: Callable[[Any], Any]) -> Any:
    with _api_errors(url), _client(url, api_key) as client:
        return call(client)


@app.command()
def cancel(job_id: str, url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """Cancel a job: waiting actions at once, running ones are asked to stop."""
    result = _call_api(url, api_key, lambda c: c.cancel(job_id))
    typer.echo(
        f"job {job_id} cancelled: {result['cancelled_actions']} waiting actions cancelled, "
        f"{result['stopping_actions']} running actions asked to stop"
    )


@app.command()
def retry(action_id: str, url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """Run a failed action once more."""
    result = _call_api(url, api_key, lambda c: c.retry(action_id))
    typer.echo(f"action {action_id} queued again (up to attempt {result['max_attempts']})")


@app.command()
def replay(
    action_id: str,
    max_attempts: Annotated[int | None, typer.Option(help="attempts to give it (default: its type's)")] = None,
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Replay a dead letter with a fresh attempt budget."""
    result = _call_api(url, api_key, lambda c: c.replay(action_id, max_attempts))
    typer.echo(f"action {action_id} replayed (up to attempt {result['max_attempts']})")


@app.command("dead-letters")
def dead_letters(
    queue: Annotated[str | None, typer.Option(help="only this queue")] = None,
    action_type: Annotated[str | None, typer.Option("--type", help="only this action type")] = None,
    limit: Annotated[int, typer.Option(help="most rows to show")] = 50,
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """List actions that failed for good (replay them with `jobyard replay ACTION_ID`)."""
    items = _call_api(url, api_key, lambda c: c.dead_letters(queue=queue, type_=action_type, limit=limit))
    _print_each(items, _print_dead_letter, "no dead letters")


def _print_dead_letter(item: dict[str, Any]) -> None:
    error = item["error"].splitlines()[0][:90] if item.get("error") else ""
    typer.echo(f"{item['id']}  {item['queue']:<12} {item['type']:<24} attempts={item['attempts']}  {error}")


def _print_each(items: list[dict[str, Any]], printer: Callable[[dict[str, Any]], None], none: str) -> None:
    """Each item a line (``printer``), or ``none`` when there is no item."""
    if not items:
        typer.echo(none)
    for item in items:
        printer(item)


@app.command()
def top(
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 1.0,
    once: Annotated[bool, typer.Option(help="print one screen and exit")] = False,
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Queues, throughput and workers, live in the terminal (Ctrl-C to quit)."""
    from jobyard.cli_live import run_top

    with _api_errors(url), contextlib.suppress(KeyboardInterrupt):
        run_top(url, interval=interval, once=once, api_key=api_key)


schedules_app = typer.Typer(help="Cron and interval schedules that submit a job each time they fire.")
app.add_typer(schedules_app, name="schedules")


def _print_schedule(item: dict[str, Any]) -> None:
    state = "paused" if item["paused"] else f"next {_when(item['next_fire_at'])} UTC"
    types = ", ".join(a["type"] for a in item["job"].get("actions", []))
    typer.echo(
        f"{item['id']}  {item['name']:<24} {item['description']:<28} {state}  [{types}]  missed={item['missed']}"
    )


@schedules_app.command("create")
def schedules_create(
    name: Annotated[str, typer.Argument(help="a name for the schedule (and its jobs)")],
    action_type: Annotated[str, typer.Option("--action", help="the action type each fire runs")],
    cron: Annotated[str | None, typer.Option(help="cron expression, e.g. '0 0 * * *' (daily at midnight)")] = None,
    every: Annotated[str | None, typer.Option(help="an interval instead: 90s, 30m, 2h, 1d")] = None,
    payload: Annotated[str | None, typer.Option(help="JSON payload of the action")] = None,
    count: Annotated[int, typer.Option(min=1, help="actions of this type in each job")] = 1,
    timezone: Annotated[str, typer.Option(help="IANA time zone the cron expression is read in")] = "UTC",
    missed: Annotated[str, typer.Option(help="skip | run_once: what to do with fire times missed while down")] = "skip",
    paused: Annotated[bool, typer.Option(help="create it paused")] = False,
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Create a schedule (give --cron or --every)."""
    data = _payload(payload)
    body: dict[str, Any] = {
        "name": name,
        "timezone": timezone,
        "missed": missed,
        "paused": paused,
        "job": {"name": name, "actions": [{"type": action_type, "payload": data}] * count},
    }
    if cron is not None:
        body["cron"] = cron
    if every is not None:
        body["every"] = every
    _print_schedule(_call_api(url, api_key, lambda c: c.create_schedule(body)))


@schedules_app.command("list")
def schedules_list(url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """List the schedules."""
    _print_each(_call_api(url, api_key, lambda c: c.schedules()), _print_schedule, "no schedules")


@schedules_app.command("pause")
def schedules_pause(schedule_id: str, url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """Pause a schedule: it fires no more until resumed."""
    _print_schedule(_call_api(url, api_key, lambda c: c.pause_schedule(schedule_id)))


@schedules_app.command("resume")
def schedules_resume(schedule_id: str, url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """Resume a schedule from now on (fire times passed while paused are not made up)."""
    _print_schedule(_call_api(url, api_key, lambda c: c.pause_schedule(schedule_id, paused=False)))


@schedules_app.command("delete")
def schedules_delete(schedule_id: str, url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """Delete a schedule (jobs it already submitted stay)."""
    _call_api(url, api_key, lambda c: c.delete_schedule(schedule_id))
    typer.echo(f"schedule {schedule_id} deleted")


webhooks_app = typer.Typer(help="Webhook endpoints for the tenant's domain events, and their delivery log.")
app.add_typer(webhooks_app, name="webhooks")


def _print_webhook(item: dict[str, Any]) -> None:
    state = "active" if item["active"] else "disabled"
    line = f"{item['id']}  {state:<8} {item['url']}  [{', '.join(item['events'])}]"
    typer.echo(f"{line}  {item['description']}" if item.get("description") else line)


@webhooks_app.command("create")
def webhooks_create(
    target: Annotated[str, typer.Argument(metavar="URL", help="where to POST each event (http or https)")],
    events: Annotated[
        list[str] | None,
        typer.Option(
            "--event", help="job.created, job.ready, job.completed or action.failed (repeat; default job.completed)"
        ),
    ] = None,
    description: Annotated[str | None, typer.Option(help="a note for whoever reads the list")] = None,
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Register a webhook endpoint; prints it and its signing secret, which is shown this once."""
    made = _call_api(url, api_key, lambda c: c.create_webhook(target, events=events, description=description))
    _print_webhook(made)
    typer.echo(f"secret: {made['secret']}  (shown this once: verify each request's Jobyard-Signature with it)")


@webhooks_app.command("list")
def webhooks_list(url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """List the webhook endpoints (without their secrets)."""
    _print_each(_call_api(url, api_key, lambda c: c.webhooks()), _print_webhook, "no webhooks")


@webhooks_app.command("disable")
def webhooks_disable(webhook_id: str, url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """Stop sending to an endpoint: no new events for it; its pending deliveries wait until it is enabled."""
    _print_webhook(_call_api(url, api_key, lambda c: c.set_webhook_active(webhook_id, False)))


@webhooks_app.command("enable")
def webhooks_enable(webhook_id: str, url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """Send to an endpoint again: its pending deliveries go out, and its events from now on."""
    _print_webhook(_call_api(url, api_key, lambda c: c.set_webhook_active(webhook_id, True)))


@webhooks_app.command("delete")
def webhooks_delete(webhook_id: str, url: ApiUrl = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """Delete a webhook endpoint; its pending deliveries end as failed."""
    _call_api(url, api_key, lambda c: c.delete_webhook(webhook_id))
    typer.echo(f"webhook {webhook_id} deleted")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    status: Annotated[str | None, typer.Option(help="pending, delivered or failed")] = None,
    webhook: Annotated[str | None, typer.Option(help="only this endpoint's (its id)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="most deliveries to show")] = 20,
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """The delivery log, newest first: each event sent, its attempts, the last answer and error."""
    page = _call_api(url, api_key, lambda c: c.webhook_deliveries(status=status, webhook_id=webhook, limit=limit))
    _print_each(page["items"], _print_delivery, "no deliveries")


def _print_delivery(item: dict[str, Any]) -> None:
    answer = f"HTTP {item['response_code']}" if item.get("response_code") else "no answer"
    line = f"{item['id']}  {item['status']:<9} {item['event_type']:<13} attempts={item['attempts']}  {answer}"
    if item.get("last_error"):
        line += f"  {item['last_error'].splitlines()[0][:80]}"
    typer.echo(f"{line}  {item['url']}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
