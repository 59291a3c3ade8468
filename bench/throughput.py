"""Worker throughput: N jobs queued up front, then worker process(es) started, then timed.

Every system runs on the same Redis and is measured the same way: the harness polls the
system's own record of unfinished (or finished) jobs every few milliseconds until all N are
done. Two figures come out of a run:

- `jobs_per_second`: the steady rate, from the first poll that saw a finished job to the last
  job (so interpreter start-up, which differs between Python and Node, is left out);
- `wall_seconds`: from spawning the worker(s) to the last job, start-up included.

A run that has not finished by its time limit is stopped and reported with `complete: false`
and the rate it reached (arq at a long poll_delay would otherwise take minutes).

shopjobs runs are real `arq jobs.WorkerSettings` processes doing everything they do in
production, including claiming each job in Postgres and mirroring its outcome there; the run is
over when the queue (the shop's set, service/queue/) is empty, which (the runner writes
the outcome before it returns to arq) means every row is `completed`, and the harness checks
that it is.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from arq.constants import expires_extra_ms, in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from bench.stack import SHOP, Proc, Stack, worker_command
from jobs.builtin.echo import EchoInput
from service import queue
from tools.services import free_port

POLL_SECONDS = 0.005
SAMPLE_SECONDS = 0.1
ENQUEUE_CHUNK = 1000
BULLMQ_DIR = Path(__file__).resolve().parent / "bullmq"
ARQ_QUEUE = "bench:arq"
SAQ_QUEUE = "bench-saq"
BULLMQ_QUEUE = "bench-bullmq"

Progress = Callable[[int, int], None]


@dataclass
class Run:
    system: str
    concurrency: int
    n: int
    done: int = 0
    complete: bool = False
    jobs_per_second: float = 0.0
    wall_seconds: float = 0.0
    first_done_seconds: float = 0.0
    processes: int = 1
    settings: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- queueing many jobs at once -------------------------------------------------------------


async def arq_enqueue_many(
    redis: Redis,
    queue_name: str,
    function: str,
    args: Sequence[tuple[Any, ...]],
    job_ids: Sequence[str],
    serializer: Callable[[Any], bytes] | None = None,
) -> None:
    """What `ArqRedis.enqueue_job` writes (job key + queue entry), pipelined in chunks."""
    now = timestamp_ms()
    for start in range(0, len(args), ENQUEUE_CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for job_args, job_id in zip(
                args[start : start + ENQUEUE_CHUNK],
                job_ids[start : start + ENQUEUE_CHUNK],
                strict=True,
            ):
                data = serialize_job(function, job_args, {}, None, now, serializer=serializer)
                pipe.psetex(job_key_prefix + job_id, expires_extra_ms, data)
                pipe.zadd(queue_name, {job_id: now})
            await pipe.execute()


def echo_input(sleep_ms: int = 0) -> dict[str, Any]:
    """The row input the web would store for an echo job (the model's dump, defaults included)."""
    return EchoInput(message="", sleep_ms=sleep_ms).model_dump(mode="json")


async def add_shopjobs_jobs(stack: Stack, n: int, job_input: dict[str, Any]) -> None:
    """N pending `echo` rows and their queue entries, as `POST /proxy/process` leaves them (on
    the bench shop's own set: fair scheduling, the default)."""
    assert stack.pg is not None and stack.redis is not None
    ids = [uuid.uuid4() for _ in range(n)]
    await stack.pg.execute(
        """INSERT INTO jobs (id, shop_id, type, input)
           SELECT id, $2, 'echo', $3::jsonb FROM unnest($1::uuid[]) AS id""",
        ids,
        stack.shop_id,
        orjson.dumps(job_input).decode(),
    )
    for start in range(0, n, ENQUEUE_CHUNK):
        chunk = [("echo", str(job_id), SHOP) for job_id in ids[start : start + ENQUEUE_CHUNK]]
        await queue.enqueue_many(stack.redis, chunk)


# -- watching a run -------------------------------------------------------------------------


async def watch(
    stack: Stack,
    run: Run,
    count_done: Callable[[], Awaitable[int]],
    procs: Iterable[Proc],
    timeout: float,
    progress: Progress | None,
    samplers: dict[str, Callable[[], Awaitable[int]]] | None = None,
    on_first_done: Callable[[], None] | None = None,
    steady_timeout: float | None = None,
) -> Run:
    """Poll until all N are done or the time is up; fill in the run's figures and CPU use.

    `samplers` are gauges read every SAMPLE_SECONDS meanwhile; their mean and maximum over
    the steady part of the run go into the run's settings.
    """
    procs = list(procs)
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in samplers or {}}
    finished = asyncio.Event()

    async def sample() -> None:
        while not finished.is_set():
            for name, gauge in (samplers or {}).items():
                samples[name].append((time.perf_counter(), await gauge()))
            await asyncio.sleep(SAMPLE_SECONDS)

    sampler = asyncio.create_task(sample())
    whole, steady = stack.cpu_meter(worker=procs), stack.cpu_meter(worker=procs)
    whole.start()
    began = time.perf_counter()
    first: tuple[float, int] | None = None
    done = 0
    now = began
    try:
        while True:
            done = await count_done()
            now = time.perf_counter()
            if done > 0 and first is None:
                first = (now, done)
                steady.start()  # like the rate, CPU is counted from the first finished job
                if on_first_done is not None:
                    on_first_done()
            if progress is not None:
                progress(done, run.n)
            if done >= run.n or now - began > timeout:
                break
            if steady_timeout is not None and first is not None and now - first[0] > steady_timeout:
                break
            for proc in procs:
                proc.check_alive(f"{run.system} worker")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        finished.set()
        await sampler
    for name, taken in samples.items():
        values = [v for t, v in taken if first is not None and t >= first[0]] or [0]
        run.settings[f"{name}_mean"] = round(sum(values) / len(values), 1)
        run.settings[f"{name}_max"] = max(values)
    if first is not None and now - first[0] > 0.05:
        run.cpu = steady.stop(now - first[0])
    else:
        run.cpu = whole.stop(max(now - began, 1e-6))
    run.done = min(done, run.n)
    run.complete = done >= run.n
    run.wall_seconds = round(now - began, 3)
    if first is not None:
        run.first_done_seconds = round(first[0] - began, 3)
        steady_time, steady_jobs = now - first[0], done - first[1]
        if steady_time > 0.05 and steady_jobs > 0:
            run.jobs_per_second = round(steady_jobs / steady_time, 1)
        else:  # everything finished between two polls (tiny runs): the start-up-inclusive rate
            run.jobs_per_second = round(run.done / max(now - began, 1e-6), 1)
    return run


def arq_slots_busy(redis: Redis) -> Callable[[], Awaitable[int]]:
    """A gauge of the jobs arq is running: its in-progress keys (raw arq and shopjobs alike).

    arq counts a job against its concurrency from the moment it takes the in-progress key to
    its finish, so this is the number of busy slots, whatever the job does inside.
    """

    async def gauge() -> int:
        count = 0
        async for _ in redis.scan_iter(match=f"{in_progress_key_prefix}*", count=5000):
            count += 1
        return count

    return gauge


def stop(procs: Iterable[Proc]) -> None:
    for proc in procs:
        proc.stop()


# -- the systems ----------------------------------------------------------------------------


async def shopjobs(
    stack: Stack,
    *,
    n: int,
    concurrency: int,
    timeout: float,
    processes: int = 1,
    sleep_ms: int = 0,
    progress: Progress | None = None,
    profile: Callable[[Proc], Any] | None = None,
    steady_timeout: float | None = None,
) -> Run:
    """`arq jobs.WorkerSettings` process(es) on N `echo` jobs, with Postgres mirroring.

    `profile` is called with the first worker once it has finished a job (a profiler to stop
    at the end); `steady_timeout` ends the run that long after its first finished job.
    """
    assert stack.redis is not None and stack.pg is not None
    redis, pg = stack.redis, stack.pg
    await stack.reset()
    job_input = echo_input(sleep_ms)
    await add_shopjobs_jobs(stack, n, job_input)
    run = Run(
        "shopjobs", concurrency, n, processes=processes,
        settings={"job": "echo", "input": job_input, "mirroring": "postgres"},
    )  # fmt: skip
    procs = [
        stack.spawn(
            worker_command(),
            stack.env(worker_concurrency=concurrency, worker_health_port=free_port()),
            "shopjobs-worker",
        )
        for _ in range(processes)
    ]
    profilers: list[Any] = []

    def attach_profiler() -> None:  # once the worker is warm: imports are not the subject
        if profile is not None:
            profilers.append(profile(procs[0]))

    async def count_done() -> int:  # queued and running entries, wherever fairness put them
        return n - (await queue.depth(redis))[0]

    async def rows_processing() -> int:
        return int(await pg.fetchval("SELECT count(*) FROM jobs WHERE status = 'processing'"))

    samplers = {"arq_slots_busy": arq_slots_busy(redis), "rows_processing": rows_processing}
    try:
        await watch(
            stack, run, count_done, procs, timeout, progress, samplers, attach_profiler,
            steady_timeout,
        )  # fmt: skip
    finally:
        for profiler in profilers:
            profiler.finish()
        stop(procs)
    rows = await pg.fetchval("SELECT count(*) FROM jobs WHERE status = 'completed'")
    run.settings["rows_completed"] = rows
    if run.complete and rows != n:
        raise RuntimeError(f"shopjobs: queue empty but only {rows} of {n} rows completed")
    return run


async def raw_arq(
    stack: Stack,
    *,
    n: int,
    concurrency: int,
    poll_delay: float,
    timeout: float,
    progress: Progress | None = None,
) -> Run:
    """Stock arq 0.28 (bench/arq_worker.py): a no-op function, no mirroring."""
    assert stack.redis is not None
    redis = stack.redis
    await stack.reset()
    ids = [uuid.uuid4().hex for _ in range(n)]
    await arq_enqueue_many(redis, ARQ_QUEUE, "noop", [()] * n, ids)
    run = Run("arq", concurrency, n, settings={"poll_delay": poll_delay})
    env = stack.env(
        bench_arq_queue=ARQ_QUEUE, bench_arq_max_jobs=concurrency, bench_arq_poll_delay=poll_delay
    )
    proc = stack.spawn([sys.executable, "-m", "arq", "bench.arq_worker.WorkerSettings"], env, "arq")

    async def count_done() -> int:
        return n - int(await redis.zcard(ARQ_QUEUE))

    samplers = {"arq_slots_busy": arq_slots_busy(redis)}
    try:
        return await watch(stack, run, count_done, [proc], timeout, progress, samplers)
    finally:
        proc.stop()


async def saq(
    stack: Stack, *, n: int, concurrency: int, timeout: float, progress: Progress | None = None
) -> Run:
    """SAQ (bench/saq_worker.py): a no-op function, SAQ's defaults."""
    from saq import Queue

    await stack.reset()
    saq_queue = Queue.from_url(stack.redis_url, name=SAQ_QUEUE)
    try:
        for start in range(0, n, 200):
            await asyncio.gather(*(saq_queue.enqueue("noop") for _ in range(min(200, n - start))))
        run = Run("saq", concurrency, n)
        args = [sys.executable, "-m", "bench.saq_worker", stack.redis_url, SAQ_QUEUE]
        proc = stack.spawn([*args, str(concurrency)], stack.env(), "saq")

        async def count_done() -> int:
            return n - await saq_queue.count("incomplete")

        try:
            return await watch(stack, run, count_done, [proc], timeout, progress)
        finally:
            proc.stop()
    finally:
        await saq_queue.disconnect()


def bullmq_ready() -> str | None:
    """None when the BullMQ baseline can run, else why not (no Node, npm install failed)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node/npm not found"
    if (BULLMQ_DIR / "node_modules" / "bullmq").is_dir():
        return None
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=BULLMQ_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        return f"npm ci failed: {(result.stderr or result.stdout).strip()[-300:]}"
    return None


async def bullmq(
    stack: Stack, *, n: int, concurrency: int, timeout: float, progress: Progress | None = None
) -> Run:
    """BullMQ (bench/bullmq/bench.mjs): a no-op Worker, BullMQ's defaults."""
    assert stack.redis is not None
    redis = stack.redis
    await stack.reset()
    script = str(BULLMQ_DIR / "bench.mjs")
    node = shutil.which("node") or "node"
    enqueue = await asyncio.create_subprocess_exec(
        node, script, "enqueue", stack.redis_url, BULLMQ_QUEUE, str(n),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await enqueue.communicate()
    if enqueue.returncode != 0:
        raise RuntimeError(f"bullmq enqueue failed: {output.decode()[-2000:]}")
    run = Run("bullmq", concurrency, n)
    proc = stack.spawn(
        [node, script, "work", stack.redis_url, BULLMQ_QUEUE, str(concurrency)],
        stack.env(),
        "bullmq",
    )
    completed = f"bull:{BULLMQ_QUEUE}:completed"

    async def count_done() -> int:
        return int(await redis.zcard(completed))

    try:
        return await watch(stack, run, count_done, [proc], timeout, progress)
    finally:
        proc.stop()


# -- profiling ------------------------------------------------------------------------------


class PySpy:
    """`py-spy record` attached to a worker for one run; raw (collapsed) stacks to a file.

    `--gil` keeps only samples taken while the worker runs Python: on a busy 2-core machine a
    wall-clock profile mostly shows where the process sat waiting for a core (socket writes
    that wake Postgres or Redis), not where its own time goes.
    """

    def __init__(self, proc: Proc, output: Path, rate: int = 200) -> None:
        self.output = output
        self.error: str | None = None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.log = output.with_suffix(".log")
        self.popen: subprocess.Popen[bytes] | None = None
        if not Path(spy).exists():
            self.error = "py-spy not installed (pip install -e '.[bench]')"
            return
        with open(self.log, "wb") as log:
            self.popen = subprocess.Popen(
                [
                    spy, "record", "--pid", str(proc.pid), "--rate", str(rate),
                    "--format", "raw", "--nonblocking", "--gil", "--output", str(output),
                ],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def finish(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if not self.output.exists():
            self.error = f"py-spy wrote nothing: {self.log.read_text(errors='replace')[-500:]}"
