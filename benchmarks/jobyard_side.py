"""The jobyard half of the side-by-side benchmark: the real processes on the real servers, as a user runs them.

Starts `jobyard api`, `jobyard relay` and W `jobyard worker` processes on PostgreSQL + RabbitMQ + Redis, submits
through the HTTP API, and detects completion in the store (the source of truth); then tears everything down.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import asyncpg
import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from benchmarks.common import (
    REPO_ROOT,
    BenchTimeout,
    CpuProbe,
    Deadline,
    HostSteal,
    RssPeaks,
    cpu_seconds,
    p50_p99,
    server_pids,
)
from benchmarks.machine_probe import share_after_slow_cpu
from benchmarks.rawhttp import RawHttpPool, RoundRobinHttp
from jobyard.client import AsyncClient

FINAL = ("succeeded", "failed", "cancelled")
QUEUE = "bench"


@dataclass
class JobyardConfig:
    """One run of the jobyard side. URLs default to the local servers; every field is a CLI flag of ``run``."""

    jobs: int = 1000
    actions: int = 10
    workers: int = 2
    concurrency: int | None = None  # per worker process; None: jobyard's default
    message_actions: int | None = None  # actions per broker message; None: jobyard's default
    submit_concurrency: int = 8  # HTTP submissions in flight (clients submit concurrently)
    submit_batch: int = 1  # jobs per request: 1 is POST /api/jobs per job, more is POST /api/jobs:batch
    # "http": the driver's own HTTP requests, submit_batch jobs each; "client": jobyard's AsyncClient, one submit()
    # a job from submit_concurrency callers (the client coalesces the calls it gets at once into batches)
    submit_via: str = "http"
    api_processes: int = 1  # API processes; requests go to each in turn, as behind a load balancer
    latency_samples: int = 200
    latency_interval_ms: float = 10.0
    status_rps: float = 1000.0
    status_seconds: float = 5.0
    status_while_busy: bool = True  # also read statuses at status_rps while a second N x K batch runs
    timeout: float = 300.0
    pg_admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/12"
    db_prefix: str = "jobyard_bench"
    queue_prefix: str = "jobyard-bench"
    extra_env: dict[str, str] = field(default_factory=dict)
    profile_dir: str | None = None  # py-spy records of api, relay and workers during the throughput phase


# PostgreSQL's application_name of jobyard's processes (set by the CLI) -> the role the benchmark reports
_PG_CLIENTS = {"jobyard-api": "api", "jobyard-worker": "workers", "jobyard-relay": "relay"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_database(admin_url: str, name: str) -> str:
    return urlparse(admin_url)._replace(path=f"/{name}").geturl()


class Processes:
    """jobyard's processes for one run; logs go to temporary files shown when something fails."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, IO[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        log = tempfile.TemporaryFile(prefix=f"jobyard-bench-{name}-")  # noqa: SIM115 - closed in stop_all
        self.logs[name] = log
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "jobyard", *args],
            env=self.env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pids(self, prefix: str) -> list[int]:
        return [p.pid for n, p in self.procs.items() if n.startswith(prefix)]

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early with code {proc.returncode}:\n{self.tail()}")

    def tail(self, limit: int = 3000) -> str:
        out = []
        for name, log in self.logs.items():
            with contextlib.suppress(Exception):
                log.flush()
                log.seek(0)
                out.append(f"--- {name}\n{log.read().decode(errors='replace')[-limit:]}")
        return "\n".join(out)

    def stop_all(self, grace: float = 15.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs.values():
            log.close()


class _CountingTransport(httpx.AsyncHTTPTransport):
    """httpx's transport for the client, counting its submit requests (one ``POST /api/jobs`` or ``:batch`` each)."""

    def __init__(self) -> None:
        super().__init__()
        self.submits = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path in ("/api/jobs", "/api/jobs:batch"):
            self.submits += 1
        return await super().handle_async_request(request)


def _run_cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobyard", *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"jobyard {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


class JobyardBench:
    def __init__(self, cfg: JobyardConfig) -> None:
        self.cfg = cfg
        self.run_id = uuid.uuid4().hex[:8]
        self.db_name = f"{cfg.db_prefix}_{self.run_id}"
        self.db_url = _with_database(cfg.pg_admin_url, self.db_name)
        self.queue_prefix = f"{cfg.queue_prefix}-{self.run_id}"
        self.ports = [_free_port() for _ in range(max(1, cfg.api_processes))]
        self.worker_metric_ports = [_free_port() for _ in range(cfg.workers)]  # their batches (``batching``)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBYARD_")}
        env.update(
            JOBYARD_DATABASE_URL=self.db_url,
            JOBYARD_BROKER_URL=cfg.amqp_url,
            JOBYARD_REDIS_URL=cfg.redis_url,
            JOBYARD_QUEUE_PREFIX=self.queue_prefix,
            JOBYARD_APP="benchmarks.jobyard_app:yard",
            JOBYARD_LOG_LEVEL="WARNING",
            PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        )
        if cfg.concurrency is not None:
            env["JOBYARD_WORKER_CONCURRENCY"] = str(cfg.concurrency)
        if cfg.message_actions is not None:
            env["JOBYARD_MESSAGE_ACTIONS"] = str(cfg.message_actions)
        env.update(cfg.extra_env)
        self.env = env
        self.procs = Processes(env)
        self.api_pools = [RawHttpPool("127.0.0.1", port, max(cfg.submit_concurrency, 32)) for port in self.ports]
        self.http = self.api_pools[0] if len(self.api_pools) == 1 else RoundRobinHttp(self.api_pools)
        if cfg.submit_via not in ("http", "client"):
            raise ValueError(f"submit_via is http or client, not {cfg.submit_via!r}")
        if cfg.submit_via == "client" and (cfg.submit_batch != 1 or cfg.api_processes != 1):
            raise ValueError("submitting through the client takes one API process and one job a submit() call")
        self.client: AsyncClient | None = None
        self.client_transport: _CountingTransport | None = None  # counts the client's submit requests
        if cfg.submit_via == "client":
            self.client_transport = _CountingTransport()
            self.client = AsyncClient(f"http://127.0.0.1:{self.ports[0]}", transport=self.client_transport)
        self.db: asyncpg.Connection | None = None
        self.deadline = Deadline(cfg.timeout)

    # --- set-up and teardown ---------------------------------------------------------------------------
    async def setup(self) -> None:
        admin = await asyncpg.connect(self.cfg.pg_admin_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {self.db_name}")
        finally:
            await admin.close()
        await asyncio.to_thread(_run_cli, self.env, "migrate")
        for i, port in enumerate(self.ports):  # one process is "api" (profile files keep their names), more "api-N"
            self.procs.start("api" if len(self.ports) == 1 else f"api-{i}", "api", "--port", str(port))
        self.procs.start("relay", "relay")
        for i, port in enumerate(self.worker_metric_ports):
            self.procs.start(f"worker-{i}", "worker", "--metrics-port", str(port))
        self.db = await asyncpg.connect(self.db_url)
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        import aio_pika

        for api in self.api_pools:
            while True:
                self.procs.check_alive()
                with contextlib.suppress(OSError, ValueError, Exception):
                    status, body = await api.request("GET", "/readyz")
                    if status == 200 and orjson.loads(body)["status"] == "ok":
                        break
                await asyncio.sleep(min(0.2, self.deadline.remaining()))
        connection = await aio_pika.connect(self.cfg.amqp_url)
        try:
            while True:
                self.procs.check_alive()
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    queue = await channel.declare_queue(f"{self.queue_prefix}.{QUEUE}", passive=True)
                    if (queue.declaration_result.consumer_count or 0) >= self.cfg.workers:
                        break
                await asyncio.sleep(min(0.2, self.deadline.remaining()))
        finally:
            await connection.close()
        # The relay leads (holds the store's advisory lock) before anything is timed, so its share of the work (the
        # domain events every job writes) falls inside the timed phases, as in a deployment that has run a while.
        assert self.db is not None
        while not await self.db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database())"
        ):
            self.procs.check_alive()
            await asyncio.sleep(min(0.1, self.deadline.remaining()))

    async def teardown(self) -> None:
        self.procs.stop_all()
        await self.http.close()
        if self.client is not None:
            await self.client.aclose()
        if self.db is not None:
            await self.db.close()
        with contextlib.suppress(Exception):
            await self._delete_queues()
        with contextlib.suppress(Exception):
            await self._delete_redis_keys()
        admin = await asyncpg.connect(self.cfg.pg_admin_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")
        finally:
            await admin.close()

    async def _delete_queues(self) -> None:
        import aio_pika

        connection = await aio_pika.connect(self.cfg.amqp_url)
        try:
            for name in (QUEUE, "dead-letters"):
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.queue_delete(f"{self.queue_prefix}.{name}")
        finally:
            await connection.close()

    async def _delete_redis_keys(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.from_url(self.cfg.redis_url)
        try:
            batch: list[bytes] = []
            async for key in client.scan_iter(match="jobyard:result:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.unlink(*batch)
                    batch.clear()
            if batch:
                await client.unlink(*batch)
        finally:
            await client.aclose()

    # --- helpers ---------------------------------------------------------------------------------------
    async def submit(self, name: str, actions: Sequence[dict[str, Any]]) -> str:
        status, body = await self.http.request("POST", "/api/jobs", orjson.dumps({"name": name, "actions": actions}))
        if status != 202:
            raise RuntimeError(f"submit answered {status}: {body[:300]!r}")
        return str(orjson.loads(body)["id"])

    async def submit_batch(self, name: str, jobs: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
        payload = orjson.dumps({"jobs": [{"name": name, "actions": actions} for actions in jobs]})
        status, body = await self.http.request("POST", "/api/jobs:batch", payload)
        if status != 202:
            raise RuntimeError(f"batch submit answered {status}: {body[:300]!r}")
        return [str(job["id"]) for job in orjson.loads(body)["jobs"]]

    async def submit_many(
        self, name: str, jobs: Sequence[Sequence[dict[str, Any]]], submitted: list[str] | None = None
    ) -> list[str]:
        """Submit ``jobs`` with ``submit_concurrency`` requests in flight, ``submit_batch`` jobs a request; ids in
        order (and, as each request is accepted, appended to ``submitted`` for a concurrent ``wait_finished``).

        Through the client (``submit_via="client"``): ``submit_concurrency`` callers, each calling
        ``AsyncClient.submit`` for one job after another.
        """
        ids: list[str] = [""] * len(jobs)
        if self.client is not None:
            client, cursor = self.client, iter(range(len(jobs)))

            async def caller() -> None:
                for index in cursor:
                    job_id = await client.submit(list(jobs[index]), name=name)
                    ids[index] = job_id
                    if submitted is not None:
                        submitted.append(job_id)

            await asyncio.gather(*(caller() for _ in range(self.cfg.submit_concurrency)))
            return ids
        per = max(1, self.cfg.submit_batch)
        cursor = iter(range(0, len(jobs), per))

        async def submitter() -> None:
            for start in cursor:
                if per == 1:
                    accepted = [await self.submit(name, jobs[start])]
                else:
                    accepted = await self.submit_batch(name, jobs[start : start + per])
                ids[start : start + len(accepted)] = accepted
                if submitted is not None:
                    submitted.extend(accepted)

        await asyncio.gather(*(submitter() for _ in range(self.cfg.submit_concurrency)))
        return ids

    async def wait_finished(self, submitted: Sequence[str], count: int, poll: float = 0.01, window: int = 100) -> None:
        """Poll the store until ``count`` of the ``submitted`` jobs (a list that may still be growing) are final.

        Each poll looks up the oldest ``window`` ids not yet seen final, by primary key: the driver's own reads
        cost PostgreSQL about the same per poll however many jobs there are. (Until 2026-11-30 it counted the
        finished jobs over the whole table every 10 ms, which at 5,000 jobs cost PostgreSQL 1.6 ms a poll, a
        fifth of its CPU in the timed phase, all of it charged to jobyard.)
        """
        assert self.db is not None
        # By primary key, whatever the planner thinks of a fresh table it has no statistics for (it chose a
        # sequential scan, as costly as the count this replaced); only this connection of the driver's own.
        await self.db.execute("SET enable_seqscan = off")
        try:
            await self._poll_until_final(submitted, count, poll, window)
        finally:
            await self.db.execute("RESET enable_seqscan")

    async def _poll_until_final(self, submitted: Sequence[str], count: int, poll: float, window: int) -> None:
        assert self.db is not None
        statement = await self.db.prepare(
            "SELECT id::text FROM jobyard_jobs WHERE id = ANY($1::uuid[]) AND status = ANY($2::text[])"
        )
        final = list(FINAL)
        pending: list[str] = []
        taken = confirmed = 0
        while True:
            if taken < len(submitted):
                pending.extend(submitted[taken:])
                taken = len(submitted)
            head = pending[:window]
            done = {row[0] for row in await statement.fetch(head, final)} if head else set()
            if done:
                pending = [job_id for job_id in head if job_id not in done] + pending[window:]
                confirmed += len(done)
            if confirmed >= count:
                return
            if head and len(done) == len(head):
                continue  # the whole window was final: the next one may be too
            self.procs.check_alive()
            self.deadline.remaining()
            await asyncio.sleep(poll)

    async def _api_samples(self) -> list[Sample]:
        """Every sample on the API processes' ``/metrics``."""
        samples: list[Sample] = []
        for pool in self.api_pools:
            status, body = await pool.request("GET", "/metrics")
            if status != 200:
                raise RuntimeError(f"GET /metrics answered {status}")
            samples += [s for family in text_string_to_metric_families(body.decode()) for s in family.samples]
        return samples

    async def cache_reads(self) -> dict[str, int]:
        """The API processes' cached reads so far, by how each was served (``jobyard_cache_requests`` on
        ``/metrics``): from the process's own copy, from Redis, recomputed from the store, or Redis bypassed."""
        counts = {"local_hits": 0, "hits": 0, "misses": 0, "bypassed": 0}
        for sample in await self._api_samples():
            if sample.name == "jobyard_cache_requests_total" and sample.labels.get("result") in counts:
                counts[sample.labels["result"]] += int(sample.value)
        return counts

    async def batching(self) -> dict[str, float]:
        """The batching so far, from the processes' metrics: the API's submit statements and the jobs they stored
        (``jobyard_submit_statements``), the workers' claim and completion rounds and the actions in them
        (``jobyard_worker_batch_actions``)."""
        # (metric sample, its "stage" label or "") → the count it adds to
        wanted = {
            ("jobyard_submit_statements_total", ""): "submit_statements",
            ("jobyard_submit_statement_jobs_total", ""): "submit_jobs",
            ("jobyard_worker_batch_actions_count", "claim"): "claim_rounds",
            ("jobyard_worker_batch_actions_sum", "claim"): "claimed",
            ("jobyard_worker_batch_actions_count", "complete"): "complete_rounds",
            ("jobyard_worker_batch_actions_sum", "complete"): "completed",
        }
        samples = await self._api_samples()
        for port in self.worker_metric_ports:
            text = await asyncio.to_thread(_get_text, f"http://127.0.0.1:{port}/metrics")
            samples += [s for family in text_string_to_metric_families(text) for s in family.samples]
        counts = dict.fromkeys(wanted.values(), 0.0)
        for sample in samples:
            key = wanted.get((sample.name, sample.labels.get("stage", "")))
            if key is not None:
                counts[key] += sample.value
        return counts

    # --- phases ----------------------------------------------------------------------------------------
    async def warm_up(self) -> None:
        jobs = [[{"type": "bench.noop", "payload": {"warmup": i, "action": a}} for a in range(4)] for i in range(20)]
        await self.wait_finished(await self.submit_many("bench-warmup", jobs), len(jobs))

    async def measure_latency(self) -> list[float]:
        """Single-action jobs spaced ``latency_interval_ms`` apart: client submit time → handler start time."""
        assert self.db is not None
        sent: list[tuple[float, str]] = []
        interval = self.cfg.latency_interval_ms / 1000.0
        start = time.monotonic()
        for i in range(self.cfg.latency_samples):
            pause = start + i * interval - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            t_submit = time.time()
            sent.append((t_submit, await self.submit("bench-latency", [{"type": "bench.stamp", "payload": i}])))
        await self.wait_finished([job_id for _, job_id in sent], len(sent))
        rows = await self.db.fetch(
            "SELECT job_id::text AS job_id, result FROM jobyard_actions WHERE job_id = ANY($1::uuid[])",
            [job_id for _, job_id in sent],
        )
        started = {r["job_id"]: orjson.loads(r["result"])["started_at"] for r in rows}
        return [(started[job_id] - t_submit) * 1000.0 for t_submit, job_id in sent]

    def _noop_jobs(self) -> list[list[dict[str, Any]]]:
        """The timed batch: N jobs of K no-op actions, each action's payload naming it (the result must equal it)."""
        cfg = self.cfg
        return [[{"type": "bench.noop", "payload": {"job": j, "action": a}} for a in range(cfg.actions)]
                for j in range(cfg.jobs)]  # fmt: skip

    async def _pg_backends(self) -> dict[int, str]:
        """This run's PostgreSQL backends (their process ids) and whose they are, by ``application_name``."""
        assert self.db is not None
        own = self.db.get_server_pid()
        rows = await self.db.fetch(
            "SELECT pid, application_name AS app FROM pg_stat_activity WHERE datname = current_database()"
        )
        return {r["pid"]: "driver" if r["pid"] == own else _PG_CLIENTS.get(r["app"], "other") for r in rows}

    async def measure_throughput(self) -> dict[str, Any]:
        cfg = self.cfg
        jobs = self._noop_jobs()
        roles = {"api": self.procs.pids("api"), "relay": self.procs.pids("relay"), "workers": self.procs.pids("worker")}
        servers = server_pids()
        backends0 = await self._pg_backends()
        backend_cpu0 = {pid: cpu_seconds([pid]) for pid in backends0}
        cpu0 = {role: cpu_seconds(pids) for role, pids in roles.items()}
        servers0 = {name: cpu_seconds(pids) for name, pids in servers.items()}
        batching0 = await self.batching()
        counted = self.client_transport
        client_requests0 = counted.submits if counted is not None else 0
        client0 = time.process_time()
        profilers = self._start_profilers() if cfg.profile_dir else []
        steal = HostSteal()
        speed = CpuProbe().start()
        try:
            t0 = time.perf_counter()
            submitted: list[str] = []
            submitting = asyncio.create_task(self.submit_many("bench-throughput", jobs, submitted))
            waiting = asyncio.create_task(self.wait_finished(submitted, cfg.jobs))
            ids = await submitting
            submit_s = time.perf_counter() - t0
            await waiting
            elapsed = time.perf_counter() - t0
            host_steal = steal.share()
        finally:  # the probe stops with the phase, whatever ended it
            cpu_unit_ms = speed.stop()
        _stop_profilers(profilers)
        cpu = {role: round(cpu_seconds(pids) - cpu0[role], 2) for role, pids in roles.items()}
        cpu["client"] = round(time.process_time() - client0, 2)
        server_cpu = {name: round(cpu_seconds(pids) - servers0[name], 2) for name, pids in servers.items()}
        # Whose statements PostgreSQL's CPU went to: each backend serves one client process. A backend that started
        # during the phase counts from zero; one that ended is not counted (``backends_ended`` says how many).
        backends = await self._pg_backends()
        by_client = dict.fromkeys(("api", "workers", "relay", "driver", "other"), 0.0)
        for pid, client in backends.items():
            by_client[client] += cpu_seconds([pid]) - backend_cpu0.get(pid, 0.0)
        postgresql = {client: round(seconds, 2) for client, seconds in by_client.items()}
        postgresql["backends_ended"] = len(set(backends0) - set(backends))
        batched = {key: value - batching0[key] for key, value in (await self.batching()).items()}
        per = max(1, cfg.submit_batch)  # the driver's own requests: a job, or submit_batch jobs, each
        batched["submit_requests"] = counted.submits - client_requests0 if counted is not None else -(-len(jobs) // per)
        self.throughput_job_ids = ids
        return {
            "elapsed_s": elapsed,
            "submit_s": submit_s,
            "cpu_s": cpu,
            "server_cpu_s": server_cpu,
            "postgresql_by_client_s": postgresql,
            "host_steal_share": host_steal,
            "cpu_unit_ms": cpu_unit_ms,
            "batches": {
                "jobs_per_submit_request": _ratio(len(jobs), batched["submit_requests"]),
                "jobs_per_submit_statement": _ratio(batched["submit_jobs"], batched["submit_statements"]),
                "actions_per_claim": _ratio(batched["claimed"], batched["claim_rounds"]),
                "actions_per_completion": _ratio(batched["completed"], batched["complete_rounds"]),
                "counts": {key: int(value) for key, value in batched.items()},
            },
        }

    def _start_profilers(self, phase: str = "throughput", only: str = "") -> list[subprocess.Popen[bytes]]:
        assert self.cfg.profile_dir is not None
        out = Path(self.cfg.profile_dir)
        out.mkdir(parents=True, exist_ok=True)
        py_spy = Path(sys.executable).with_name("py-spy")
        started = []
        for name, proc in self.procs.procs.items():
            if not name.startswith(only):
                continue
            target = str(out / f"{phase}-{name}.speedscope.json")
            command = [str(py_spy), "record", "--pid", str(proc.pid), "--rate", "250", "--format", "speedscope"]
            started.append(
                subprocess.Popen([*command, "-o", target], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        time.sleep(1.0)  # py-spy needs a moment to attach
        return started

    async def verify(self, name: str = "bench-throughput") -> dict[str, int]:
        """Every action of the timed jobs is recorded in the store: succeeded once, with its payload as result."""
        assert self.db is not None
        row = await self.db.fetchrow(
            """
            SELECT count(*) AS actions,
                   count(*) FILTER (WHERE a.status = 'succeeded' AND a.attempt = 1
                                    AND a.result = a.payload AND a.finished_at IS NOT NULL) AS recorded,
                   (SELECT count(*) FROM jobyard_jobs
                     WHERE name = $2 AND status = 'succeeded'
                       AND succeeded = total AND total = $1) AS jobs_succeeded
            FROM jobyard_actions a JOIN jobyard_jobs j ON j.id = a.job_id
            WHERE j.name = $2
            """,
            self.cfg.actions,
            name,
        )
        assert row is not None
        checked = {k: int(row[k]) for k in ("actions", "recorded", "jobs_succeeded")}
        expected = self.cfg.jobs * self.cfg.actions
        if (checked["actions"], checked["recorded"], checked["jobs_succeeded"]) != (expected, expected, self.cfg.jobs):
            raise RuntimeError(f"the store does not hold every action as succeeded once: {checked}")
        return checked

    async def measure_status_reads(self) -> dict[str, Any]:
        """Open-loop GET /api/jobs/{id}/status at a fixed rate; latency counts from the scheduled send time."""
        ids = self.throughput_job_ids
        rate, seconds = self.cfg.status_rps, self.cfg.status_seconds
        total = max(1, int(rate * seconds))
        latencies: list[float] = []
        sent_at: list[float] = []  # each read's scheduled time, epoch seconds (to set beside the machine probe's)
        errors = 0
        # Steady state: every job's status is read once first (the first read of a job fills the cache from the
        # store, three Redis round trips and a query; a cold start of 1,000 jobs at once is a different test).
        for job_id in ids:
            await self.http.request("GET", f"/api/jobs/{job_id}/status")
        roles = {"api": self.procs.pids("api"), "relay": self.procs.pids("relay"), "workers": self.procs.pids("worker"),
                 **server_pids()}  # fmt: skip
        served0 = await self.cache_reads()
        cpu0 = {role: cpu_seconds(pids) for role, pids in roles.items()}
        client0 = time.process_time()
        # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds, too coarse for these latencies.
        clock = time.perf_counter

        async def one(scheduled: float, job_id: str) -> None:
            nonlocal errors
            status, _ = await self.http.request("GET", f"/api/jobs/{job_id}/status")
            if status != 200:
                errors += 1
            latencies.append((clock() - scheduled) * 1000.0)
            sent_at.append(epoch + scheduled)

        profilers = self._start_profilers("status", "api") if self.cfg.profile_dir else []
        # How steady the machine is meanwhile (benchmarks.machine_probe: a fixed unit of work every 10 ms, 2 % of a
        # core); its CPU is not in cpu_s below.
        probe = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.machine_probe", "--seconds", str(seconds),
            cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        tasks = []
        # The load generator's own garbage collections (it holds every request's task) would stall its sends and
        # be charged to the server: it collects before and after the timed loop, not during it.
        gc.collect()
        gc.disable()
        steal = HostSteal()
        start = clock() + 0.05
        epoch = time.time() - clock()
        try:
            for i in range(total):
                scheduled = start + i / rate
                pause = scheduled - clock()
                if pause > 0:
                    await asyncio.sleep(pause)
                tasks.append(asyncio.create_task(one(scheduled, random.choice(ids))))
            await asyncio.gather(*tasks)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                probe.kill()
            await probe.wait()
            raise
        finally:
            gc.enable()
        achieved = total / (clock() - start)
        host_steal = steal.share()
        _stop_profilers(profilers)
        cpu_used = {role: round(cpu_seconds(pids) - cpu0[role], 2) for role, pids in roles.items()}
        cpu_used["client"] = round(time.process_time() - client0, 2)
        served = _served_since(served0, await self.cache_reads())
        probe_out, _ = await probe.communicate()
        machine = orjson.loads(probe_out.strip().splitlines()[-1]) if probe.returncode == 0 and probe_out else None
        if machine is not None:
            # Were the slow reads the machine's? The share of reads over 5 ms that had a slow probe unit in the
            # 60 ms before, against the same share for the others (what chance alone gives).
            slow_at = machine.pop("slow_at")
            machine["slow_reads_after_slow_cpu"] = share_after_slow_cpu(
                [at for at, ms in zip(sent_at, latencies, strict=True) if ms > 5.0], slow_at
            )
            machine["other_reads_after_slow_cpu"] = share_after_slow_cpu(
                [at for at, ms in zip(sent_at, latencies, strict=True) if ms <= 5.0], slow_at
            )
        return {
            "requests": total,
            "target_rps": rate,
            "achieved_rps": round(achieved, 1),
            "errors": errors,
            "latency_ms": p50_p99(latencies),
            "served": served,
            "api_cpu_s": round(cpu_seconds(roles["api"]) - cpu0["api"], 2),
            # Where the CPU went meanwhile: the relay and workers may still be finishing the throughput phase's
            # leftovers (domain events, webhooks), which competes with the API on a small machine.
            "cpu_s": cpu_used,
            "machine": machine,
            "host_steal_share": host_steal,
        }

    async def measure_status_while_busy(self) -> dict[str, Any]:
        """Status reads at ``status_rps`` while a second batch of the same N x K jobs goes through.

        Each read is of one of the 50 jobs of the batch accepted last (what a dashboard following new work reads),
        so the reads compete with the submissions, the workers and the cache invalidations their progress causes,
        in the one API process that also takes the submissions. Open loop, latency from the scheduled send time,
        as ``measure_status_reads``. Also reported: the share of reads that found their job not yet finished, and
        the batch's own throughput with the reads running (against the throughput phase's without them).
        """
        cfg = self.cfg
        jobs = self._noop_jobs()
        rate = cfg.status_rps
        clock = time.perf_counter
        latencies: list[float] = []
        unfinished = 0
        errors = 0
        submitted: list[str] = []

        async def one(scheduled: float, job_id: str) -> None:
            nonlocal errors, unfinished
            status, body = await self.http.request("GET", f"/api/jobs/{job_id}/status")
            latencies.append((clock() - scheduled) * 1000.0)
            if status != 200:
                errors += 1
            elif orjson.loads(body)["status"] not in FINAL:
                unfinished += 1

        api_pids = self.procs.pids("api")
        served0 = await self.cache_reads()
        profilers = self._start_profilers("busy", "api") if cfg.profile_dir else []
        api0 = cpu_seconds(api_pids)
        gc.collect()
        gc.disable()  # as in measure_status_reads: the client's own collections would be charged to the server
        steal = HostSteal()
        t0 = clock()
        try:
            submitting = asyncio.create_task(self.submit_many("bench-busy", jobs, submitted))
            waiting = asyncio.create_task(self.wait_finished(submitted, cfg.jobs))
            tasks: list[asyncio.Task[None]] = []
            while not submitted and not submitting.done():  # noqa: ASYNC110 - reads are of the batch's own jobs
                await asyncio.sleep(0.001)
            start = clock()
            while not waiting.done() and not (submitting.done() and submitting.exception() is not None):
                scheduled = start + len(tasks) / rate
                pause = scheduled - clock()
                if pause > 0:
                    await asyncio.sleep(pause)
                # One of the 50 jobs accepted last (a random one of all accepted would mostly be long finished).
                tasks.append(asyncio.create_task(one(scheduled, random.choice(submitted[-50:]))))
            reading_s = clock() - start
            await submitting
            await waiting
            elapsed = clock() - t0
            await asyncio.gather(*tasks)
            host_steal = steal.share()
        finally:
            gc.enable()
            _stop_profilers(profilers)
        served = _served_since(served0, await self.cache_reads())
        return {
            "requests": len(tasks),
            "target_rps": rate,
            "achieved_rps": round(len(tasks) / reading_s, 1) if reading_s > 0 else 0.0,
            "errors": errors,
            "unfinished_share": round(unfinished / len(tasks), 3) if tasks else 0.0,
            "latency_ms": p50_p99(latencies),
            "served": served,
            "api_cpu_s": round(cpu_seconds(api_pids) - api0, 2),
            "batch_actions_per_s": round(cfg.jobs * cfg.actions / elapsed, 1),
            "host_steal_share": host_steal,
            "verified": await self.verify("bench-busy"),
        }


def _served_since(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """The reads of a phase by how they were served: counts, and each kind's share of them."""
    counts = {kind: after[kind] - before[kind] for kind in before}
    total = sum(counts.values())
    shares = {f"{kind}_share": round(n / total, 3) if total else 0.0 for kind, n in counts.items()}
    return {**counts, **shares}


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # a loopback URL of our own
        return str(response.read().decode())


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 1) if whole > 0 else None


def _stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(timeout=60)


async def run_jobyard_async(cfg: JobyardConfig) -> dict[str, Any]:
    bench = JobyardBench(cfg)
    result: dict[str, Any] = {
        "system": "jobyard",
        "jobs": cfg.jobs,
        "actions_per_job": cfg.actions,
        "workers": cfg.workers,
    }
    sampler = RssPeaks(
        lambda: {
            "api": bench.procs.pids("api"),
            "relay": bench.procs.pids("relay"),
            "workers": bench.procs.pids("worker"),
        }
    )
    try:
        await bench.setup()
        sampler.start()
        await bench.warm_up()
        steal = HostSteal()
        latency = await bench.measure_latency()
        latency_steal = steal.share()
        throughput = await bench.measure_throughput()
        result["verified"] = await bench.verify()
        status_reads = await bench.measure_status_reads() if cfg.status_rps > 0 and cfg.status_seconds > 0 else None
        busy_reads = await bench.measure_status_while_busy() if cfg.status_rps > 0 and cfg.status_while_busy else None
        sampler.sample()
    except BenchTimeout:
        raise
    except Exception as exc:
        raise RuntimeError(f"{exc}\n{bench.procs.tail()}") from exc
    finally:
        if sampler.is_alive():
            sampler.stop()
        await bench.teardown()
    actions = cfg.jobs * cfg.actions
    mib = 1024 * 1024
    result.update(
        elapsed_s=round(throughput["elapsed_s"], 4),
        actions_per_s=round(actions / throughput["elapsed_s"], 1),
        latency_ms=p50_p99(latency),
        worker_peak_rss_mb=round(sampler.peak_sum.get("workers", 0) / mib, 1),
        worker_largest_rss_mb=round(sampler.peak_one.get("workers", 0) / mib, 1),
        status_reads=status_reads,
        status_reads_while_busy=busy_reads,
        details={
            "submit_s": round(throughput["submit_s"], 4),
            "throughput_phase_cpu_s": throughput["cpu_s"],
            "throughput_phase_server_cpu_s": throughput["server_cpu_s"],
            "throughput_phase_postgresql_by_client_s": throughput["postgresql_by_client_s"],
            # How many jobs each submit statement stored, and actions each worker's claim and completion carried,
            # in the timed phase (from the processes' own metrics; None where there was none).
            "throughput_phase_batches": throughput["batches"],
            # The host's share of the machine's CPU time in each phase (benchmarks.common.HostSteal).
            "host_steal_share": {"latency": latency_steal, "throughput": throughput["host_steal_share"]},
            # How fast the CPU ran in the timed phase: the median CPU time of a fixed unit of work, ms
            # (benchmarks.common.CpuProbe; the same for every system).
            "cpu_unit_ms": {"throughput": throughput["cpu_unit_ms"]},
            "latency_samples": len(latency),
            "peak_rss_mb": {
                "api": round(sampler.peak_sum.get("api", 0) / mib, 1),
                "relay": round(sampler.peak_sum.get("relay", 0) / mib, 1),
                "workers_sum": round(sampler.peak_sum.get("workers", 0) / mib, 1),
                "largest_worker": round(sampler.peak_one.get("workers", 0) / mib, 1),
            },
            "worker_processes": cfg.workers,
            "settings": {k: v for k, v in asdict(cfg).items() if k in _REPORTED_SETTINGS},
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
    )
    return result


# The settings a report shows with its figures (the others are the run's size and the servers' addresses).
_REPORTED_SETTINGS = (
    "concurrency",
    "message_actions",
    "submit_concurrency",
    "submit_batch",
    "submit_via",
    "api_processes",
    "extra_env",
)


def run_jobyard(cfg: JobyardConfig) -> dict[str, Any]:
    """Run the jobyard side on uvloop when installed; returns the measurements as a JSON-able dict."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run_jobyard_async(cfg))
