"""`python -m bench` (`make bench`, `make bench-quick`): every benchmark in one run.

1. worker throughput on no-op jobs at concurrency 10 and 50: shopjobs (with Postgres status
   mirroring), raw arq at each poll_delay tried, SAQ, and BullMQ when Node is there;
2. end-to-end latency, one job at a time through a real uvicorn and worker;
3. the enqueue endpoint's requests per second against a bare route of the same process;
4. one against two worker processes on 20 ms jobs;
5. `inventory_report` over a whole catalogue through one bulk query (bench/bulk.py): worker
   memory growth, Admin API points against paging, rows/s;
6. fairness across shops (bench/fairness.py, issue 14): small shops' wait beside one shop's
   big backlog against an idle system, fair against FIFO jobs/s, the take's Redis cost per
   job at three backlogs.
7. waits (bench/waits.py, issue 24): other shops' short jobs while ten shops' reports wait on
   long bulk operations, against the same traffic on an idle system; the worker slots the
   waiting reports hold; each report's completion after its operation's end.
8. a burst (bench/burst.py, issue 28): 100 signed `products/update` webhooks for one product
   within 2 s, through a real web and worker, with a debounce of 5 s: the jobs that ran, with
   which input, when after the last webhook; the events recorded; the answers other than 200.

Sizes: `full` (default, under 10 minutes), `quick` (BENCH_QUICK=1 or --quick, about 3) and
`tiny` (the test suite's, seconds). JSON goes to bench/results/ (timestamped + latest.json),
the chart to latest.png, and the table with the ratios to stdout. A progress bar goes to
stderr only when stdout and stderr are terminals (never into a log).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bench import bulk, burst, cost, fairness, peers, report, throughput, waits, web
from bench.stack import ROOT, Proc, Stack, connect, disconnect, servers, wait_for_http

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REDRAW_SECONDS = 0.5
PROFILE_WEB_SECONDS = 5.0
PROFILE_MIN_JOBS = 2_000  # enough work to outlast the profile in every size
SCENARIOS = ("bulk", "fairness", "waits", "burst")  # start their own processes; `--only` runs one


@dataclass(frozen=True)
class Plan:
    name: str
    jobs: int  # N of every throughput run
    concurrencies: tuple[int, ...]
    arq_poll_delays: tuple[float, ...]
    run_timeout: float  # a throughput run stops here, complete or not
    sweep_timeout: float  # the same for arq's slower poll_delays
    latency_jobs: int
    latency_warmup: int
    latency_poll_ms: float
    enqueue_connections: int
    enqueue_seconds: float
    enqueue_warmup: float
    scaling_jobs: int
    scaling_concurrency: int
    scaling_sleep_ms: int
    profile: bool  # py-spy the worker (one extra run) and the web (one extra load)
    profile_seconds: float = 20.0
    # Scaling is a ratio of two runs, so noise counts twice: one, two, one, two... and the
    # best of each counts.
    scaling_repeats: int = 1
    # The inventory_report scenario's catalogue (products, up to max variants each).
    bulk_products: int = 3_000
    bulk_max_variants: int = 60
    # The fairness scenario (bench/fairness.py): Zipf traffic of `fair_shops` shops at
    # `fair_rate` jobs/s for `fair_seconds` beside one shop's backlog of `fair_backlog`, jobs of
    # `fair_sleep_ms`, workers at `fair_concurrency`; the take's cost at each of
    # `fair_cost_backlogs`, over `fair_cost_jobs` no-op jobs.
    fair_shops: int = 1_000
    fair_backlog: int = 100_000
    fair_rate: float = 40.0
    fair_seconds: float = 15.0
    fair_sleep_ms: int = 20
    fair_concurrency: int = 10
    fair_cost_backlogs: tuple[int, ...] = (1_000, 10_000, 100_000)
    fair_cost_jobs: int = 500
    fair_repeats: int = 2
    # The waits scenario (bench/waits.py): `waits_reports` shops' inventory_report jobs wait
    # on bulk operations of `waits_run_seconds` while `waits_traffic_shops` other shops send
    # `waits_sleep_ms` echo jobs at `waits_rate` jobs/s to one worker at `waits_concurrency`;
    # the same traffic alone for `waits_idle_seconds` first.
    waits_reports: int = 10
    waits_run_seconds: float = 20.0
    waits_idle_seconds: float = 10.0
    waits_rate: float = 40.0
    waits_sleep_ms: int = 20
    waits_concurrency: int = 10
    waits_traffic_shops: int = 50
    # Issue 27: the Python peers (bench/peers.py) and the cost per job on Postgres and Redis
    # (bench/cost.py): `cost_jobs` no-op jobs at concurrency 50, `cost_sleep_jobs` 20 ms ones.
    peers: bool = True
    peer_jobs: int = 0  # N of the peers' runs; 0: `jobs`
    cost_jobs: int = 10_000
    cost_sleep_jobs: int = 2_000


PLANS = {
    "full": Plan(
        name="full", jobs=15_000, concurrencies=(10, 50), arq_poll_delays=(0.5, 0.1, 0.01, 0.001),
        run_timeout=30, sweep_timeout=10, latency_jobs=500, latency_warmup=20, latency_poll_ms=2,
        enqueue_connections=50, enqueue_seconds=10, enqueue_warmup=1, scaling_jobs=2_000,
        scaling_concurrency=10, scaling_sleep_ms=20, profile=True, scaling_repeats=2,
    ),
    "quick": Plan(
        name="quick", jobs=3_000, concurrencies=(10, 50), arq_poll_delays=(0.5, 0.1, 0.01, 0.001),
        run_timeout=15, sweep_timeout=3, latency_jobs=100, latency_warmup=5, latency_poll_ms=2,
        enqueue_connections=50, enqueue_seconds=2, enqueue_warmup=0.5, scaling_jobs=1_000,
        scaling_concurrency=10, scaling_sleep_ms=20, profile=False, profile_seconds=5,
        bulk_products=500, fair_backlog=10_000, fair_seconds=6, fair_repeats=1,
        waits_run_seconds=12, waits_idle_seconds=6,
        peer_jobs=2_000, cost_jobs=2_000, cost_sleep_jobs=500,
    ),
    "tiny": Plan(
        name="tiny", jobs=40, concurrencies=(10, 50), arq_poll_delays=(0.01,),
        run_timeout=15, sweep_timeout=15, latency_jobs=5, latency_warmup=1, latency_poll_ms=2,
        enqueue_connections=10, enqueue_seconds=0.5, enqueue_warmup=0.2, scaling_jobs=40,
        scaling_concurrency=10, scaling_sleep_ms=20, profile=True, profile_seconds=0.5,
        bulk_products=20, bulk_max_variants=5, fair_shops=20, fair_backlog=300, fair_rate=20,
        fair_seconds=1, fair_cost_backlogs=(100, 300), fair_cost_jobs=50, fair_repeats=1,
        waits_run_seconds=3, waits_idle_seconds=1, waits_rate=20, waits_traffic_shops=10,
        cost_jobs=100, cost_sleep_jobs=40,
    ),
}  # fmt: skip


def shown(path: Path) -> str:
    """A path as the results show it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def progress_wanted(turned_off: bool, out: TextIO, bar: TextIO) -> bool:
    """Whether to draw the progress bar (on `bar`, stderr): only when it and stdout (`out`) are
    terminals. In a log (`make bench > log 2>&1`, CI) every redraw would be one more frame
    after a carriage return, thousands of them, and the table on stdout is what a log needs."""
    return not turned_off and out.isatty() and bar.isatty()


class Bar:
    """One progress bar over all steps (tqdm when installed, a plain line otherwise)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self.count = 0
        self.label = ""
        self.shown = 0.0
        self.began = time.monotonic()
        self.seconds: dict[str, float] = {}
        self.tqdm: Any = None
        if enabled:
            try:
                from tqdm import tqdm

                self.tqdm = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass

    def step(self, label: str) -> Callable[[int, int], None]:
        self.label = label
        self.began = time.monotonic()
        self._show("", force=True)
        return lambda done, of: self._show(f"{done}/{of}", force=done >= of)

    def _show(self, detail: str, force: bool = False) -> None:
        # A few redraws a second: every one is a line in a log when stderr is not a terminal.
        now = time.monotonic()
        if not self.enabled or (not force and now - self.shown < REDRAW_SECONDS):
            return
        self.shown = now
        text = f"{self.label} {detail}".strip()
        if self.tqdm is not None:
            self.tqdm.set_description_str(text, refresh=False)
            self.tqdm.refresh()
        else:
            sys.stderr.write(f"\r[{self.count}/{self.total}] {text:<60}")
            sys.stderr.flush()

    def done(self) -> None:
        """The current step is over: count it and keep how long it took."""
        if self.label not in self.seconds:
            self.seconds[self.label] = round(time.monotonic() - self.began, 1)
        self.count += 1
        if self.tqdm is not None:
            self.tqdm.update(1)

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
        elif self.enabled:
            sys.stderr.write("\n")


def step_count(plan: Plan, bullmq: bool, profile: bool) -> int:
    per_concurrency = 2 + len(plan.arq_poll_delays) + (1 if bullmq else 0)
    # + latency, enqueue, inventory_report, fairness, waits, burst; scaling with one and two
    # processes
    scaling = 2 * plan.scaling_repeats
    return len(plan.concurrencies) * per_concurrency + 6 + scaling + (2 if profile else 0)


def machine() -> dict[str, Any]:
    node = shutil.which("node")
    node_version = None
    if node:
        node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "node": (node_version or "").strip() or None,
        # Other work on the machine skews every figure: a run on a busy machine shows it here.
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def server_versions(stack: Stack) -> dict[str, str]:
    assert stack.pg is not None and stack.redis is not None
    info = await stack.redis.info("server")
    return {
        "redis": str(info.get("redis_version")),
        "postgres": str(await stack.pg.fetchval("SHOW server_version")),
    }


async def scenario(name: str, plan: Plan, stack: Stack, bar: Bar) -> dict[str, Any]:
    """One of the scenarios that start their own processes (`--only` runs one alone)."""
    if name == "bulk":
        bar.step(f"inventory_report: {plan.bulk_products} products, bulk query")
        result = await bulk.inventory_report(
            stack, products=plan.bulk_products, max_variants=plan.bulk_max_variants
        )
    elif name == "fairness":
        progress = bar.step(
            f"fairness: {plan.fair_shops} shops beside a backlog of {plan.fair_backlog}"
        )
        result = await fairness.fairness(stack, plan, progress)
    elif name == "burst":
        bar.step(
            f"burst: {burst.WEBHOOKS} webhooks for one product in {burst.WINDOW_SECONDS:g} s, "
            f"debounce {burst.DEBOUNCE_SECONDS:g} s"
        )
        result = await burst.burst(stack, plan)
    else:
        bar.step(
            f"waits: {plan.waits_reports} reports on {plan.waits_run_seconds:g} s bulk "
            f"operations beside short jobs"
        )
        result = await waits.waits(stack, plan)
    bar.done()
    return result


async def measure(
    plan: Plan, stack: Stack, bar: Bar, profile_dir: Path | None, only: str | None = None
) -> dict[str, Any]:
    if only is not None:
        bar.total = 1
        return {only: await scenario(only, plan, stack, bar)}
    results: dict[str, Any] = {}
    bullmq_problem = throughput.bullmq_ready()
    bar.total = step_count(plan, bullmq_problem is None, profile_dir is not None)
    if bar.tqdm is not None:
        bar.tqdm.total = bar.total

    systems: dict[str, dict[str, Any]] = {
        "shopjobs": {"available": True, "runs": []},
        "arq": {"available": True, "runs": []},
        "saq": {"available": True, "runs": []},
        "bullmq": {"available": bullmq_problem is None, "reason": bullmq_problem, "runs": []},
    }
    n = plan.jobs
    for concurrency in plan.concurrencies:
        progress = bar.step(f"shopjobs c={concurrency}")
        run = await throughput.shopjobs(
            stack, n=n, concurrency=concurrency, timeout=plan.run_timeout, progress=progress
        )
        systems["shopjobs"]["runs"].append(run.as_dict())
        bar.done()
        for delay in plan.arq_poll_delays:
            progress = bar.step(f"arq c={concurrency} poll_delay={delay}")
            # The slow poll_delays only need long enough to show they lose.
            timeout = plan.sweep_timeout if delay >= 0.1 else plan.run_timeout
            run = await throughput.raw_arq(
                stack, n=n, concurrency=concurrency, poll_delay=delay, timeout=timeout,
                progress=progress,
            )  # fmt: skip
            systems["arq"]["runs"].append(run.as_dict())
            bar.done()
        progress = bar.step(f"saq c={concurrency}")
        run = await throughput.saq(
            stack, n=n, concurrency=concurrency, timeout=plan.run_timeout, progress=progress
        )
        systems["saq"]["runs"].append(run.as_dict())
        bar.done()
        if bullmq_problem is None:
            progress = bar.step(f"bullmq c={concurrency}")
            run = await throughput.bullmq(
                stack, n=n, concurrency=concurrency, timeout=plan.run_timeout, progress=progress
            )
            systems["bullmq"]["runs"].append(run.as_dict())
            bar.done()
    if plan.peers:  # issue 27: Celery, Procrastinate, streaq; then the cost per job
        bar.total += len(peers.PEERS) * len(plan.concurrencies) + 4
        if bar.tqdm is not None:
            bar.tqdm.total = bar.total
        step = lambda label: bar.step(label)  # noqa: E731
        systems.update(
            await peers.measure(
                stack, plan.concurrencies, plan.peer_jobs or n, plan.run_timeout, step, bar.done
            )
        )
        results["cost"] = await cost.measure(stack, plan, step, bar.done)
    results["throughput"] = {"jobs": n, "systems": systems}

    profiles: dict[str, Any] = {}
    if profile_dir is not None:
        bar.step("profile: worker at c=50 under py-spy")
        profiles["worker"] = await profile_worker(plan, stack, profile_dir)
        bar.done()

    await stack.reset()
    web_proc, port = web.start_web(stack)
    await wait_for_http(f"http://127.0.0.1:{port}/healthz", web_proc, "web")
    worker = await web.start_worker(stack, plan.scaling_concurrency)
    progress = bar.step("latency")
    results["latency"] = await web.latency(
        stack, port, jobs=plan.latency_jobs, warmup=plan.latency_warmup,
        poll_ms=plan.latency_poll_ms, progress=progress,
    )  # fmt: skip
    results["latency"]["worker_concurrency"] = plan.scaling_concurrency
    worker.stop()
    bar.done()
    bar.step("enqueue endpoint vs bare route")
    await stack.reset()
    results["enqueue"] = await web.enqueue_rate(
        stack, web_proc, port, connections=plan.enqueue_connections,
        seconds=plan.enqueue_seconds, warmup=plan.enqueue_warmup,
    )  # fmt: skip
    bar.done()
    if profile_dir is not None:
        bar.step("profile: web under the enqueue load")
        profiles["web"] = await profile_web(plan, stack, web_proc, port, profile_dir)
        results["profile"] = {"file": shown(write_profiles(profiles, profile_dir)), **profiles}
        bar.done()
    web_proc.stop()

    scaling: dict[str, Any] = {"sleep_ms": plan.scaling_sleep_ms, "runs": []}
    for repeat in range(plan.scaling_repeats):
        for key, processes in (("one", 1), ("two", 2)):
            progress = bar.step(f"scaling: {processes} worker process(es), #{repeat + 1}")
            run = await throughput.shopjobs(
                stack, n=plan.scaling_jobs, concurrency=plan.scaling_concurrency,
                timeout=plan.run_timeout, processes=processes, sleep_ms=plan.scaling_sleep_ms,
                progress=progress,
            )  # fmt: skip
            scaling["runs"].append(run.as_dict())
            if key not in scaling or run.jobs_per_second > scaling[key]["jobs_per_second"]:
                scaling[key] = run.as_dict()
            bar.done()
    one = scaling["one"]["jobs_per_second"]
    scaling["ratio"] = round(scaling["two"]["jobs_per_second"] / one, 3) if one else 0.0
    results["scaling"] = scaling

    for name in SCENARIOS:
        results[name] = await scenario(name, plan, stack, bar)
    return results


async def profile_worker(plan: Plan, stack: Stack, directory: Path) -> dict[str, Any]:
    """A separate shopjobs run at concurrency 50 with py-spy attached (its rate is not used)."""
    raw = directory / "profile-worker.raw"
    spies: list[throughput.PySpy] = []

    def attach(proc: Proc) -> throughput.PySpy:
        spies.append(throughput.PySpy(proc, raw))
        return spies[-1]

    run = await throughput.shopjobs(
        stack, n=max(plan.jobs, PROFILE_MIN_JOBS), concurrency=50, timeout=plan.run_timeout,
        profile=attach, steady_timeout=plan.profile_seconds,
    )  # fmt: skip
    if not spies or spies[0].error is not None:
        return {"error": spies[0].error if spies else "no job finished"}
    cpu = run.cpu.get("worker_cpu_percent")
    title = (
        f"Worker (`arq jobs.WorkerSettings`), concurrency 50, no-op jobs: "
        f"{run.jobs_per_second:.0f} jobs/s under py-spy, worker CPU {cpu}% of one core, "
        f"{run.settings['arq_slots_busy_mean']} of 50 arq slots busy on average"
    )
    return {"title": title, "jobs_per_second": run.jobs_per_second, "worker_cpu_percent": cpu,
            "raw_file": shown(raw), **report.summarize_profile(raw)}  # fmt: skip


async def profile_web(
    plan: Plan, stack: Stack, web_proc: Proc, port: int, directory: Path
) -> dict[str, Any]:
    """The web under the enqueue load (POST /proxy/process), py-spy attached, not measured."""
    raw = directory / "profile-web.raw"
    spy = throughput.PySpy(web_proc, raw)
    if spy.error is not None:
        return {"error": spy.error}
    try:
        result = await web.load(
            stack, web_proc, port, web.signed_path("/proxy/process"), connections=50,
            seconds=min(plan.profile_seconds, PROFILE_WEB_SECONDS), warmup=0.2,
        )  # fmt: skip
    finally:
        spy.finish()
    if spy.error is not None:
        return {"error": spy.error}
    cpu = result["cpu"].get("web_cpu_percent")
    title = (
        f"Web (`uvicorn`), POST /proxy/process from 50 connections: {result['rps']:.0f} req/s "
        f"under py-spy, web CPU {cpu}% of one core"
    )
    return {"title": title, "rps": result["rps"], "web_cpu_percent": cpu, "raw_file": shown(raw),
            **report.summarize_profile(raw)}  # fmt: skip


def write_profiles(profiles: dict[str, Any], directory: Path) -> Path:
    path = directory / "profile.txt"
    parts = [
        "py-spy --gil: samples only while the process runs Python (its own CPU time, not the "
        "time it waits on Postgres and Redis).\n"
    ]
    for name, profile in profiles.items():
        if "error" in profile:
            parts.append(f"{name}: unavailable ({profile['error']})\n")
        else:
            parts.append(profile["title"] + "\n" + report.profile_text(profile))
    path.write_text("\n".join(parts))
    return path


async def run_all(plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    started = datetime.now(UTC)
    begun = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # the profiles are written there before the JSON
    profile = plan.profile if args.profile is None else args.profile
    bar = Bar(1, enabled=progress_wanted(args.no_progress, sys.stdout, sys.stderr))
    machine_before = machine()
    try:
        with servers() as stack:
            await connect(stack)
            try:
                versions = await server_versions(stack)
                results = await measure(
                    plan, stack, bar, out if profile and not args.only else None, args.only
                )
            finally:
                await disconnect(stack)
    finally:
        bar.close()
    load_after = [round(x, 2) for x in os.getloadavg()]
    document: dict[str, Any] = {
        "schema": 1,
        "mode": plan.name,
        "started_at": started.strftime("%Y-%m-%d %H:%M:%SZ"),
        "duration_seconds": round(time.monotonic() - begun, 1),
        "machine": {**machine_before, "load_average_after": load_after, **versions},
        "services": {"durable": False, "note": "fsync, synchronous_commit and AOF off"},
        "plan": asdict(plan),
        "steps_seconds": bar.seconds,
        **results,
    }
    document["targets"] = report.evaluate(document)
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", choices=sorted(PLANS))
    parser.add_argument("--quick", action="store_true", help="the quick size (BENCH_QUICK=1)")
    parser.add_argument("--jobs", type=int, help="override N of the throughput runs")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="where JSON and chart go")
    parser.add_argument(
        "--only", choices=SCENARIOS,
        help="run this scenario alone (no chart, no profile; its targets only)",
    )  # fmt: skip
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument(
        "--no-progress", action="store_true",
        help="no progress bar (there is none anyway unless stdout and stderr are terminals)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action=argparse.BooleanOptionalAction, default=None,
        help="py-spy the worker and the web (default: on in the full and tiny sizes)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    size = args.size or ("quick" if quick else "full")
    plan = PLANS[size]
    if args.jobs:
        plan = Plan(**{**asdict(plan), "jobs": args.jobs})
    if os.environ.get("BENCH_PROFILE") is not None and args.profile is None:
        args.profile = os.environ["BENCH_PROFILE"] not in ("", "0")

    results = asyncio.run(run_all(plan, args))
    out = Path(args.out)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    if not args.no_chart and not args.only:
        results["chart"] = shown(report.chart(results, out / "latest.png"))
    if args.only:  # a part of a run: kept apart from the whole run's latest.json
        stamp, latest_name = f"{stamp}-{args.only}", f"latest-{args.only}.json"
    else:
        latest_name = "latest.json"
    latest = report.write_json(results, out, stamp, latest_name)
    print(report.table(results))
    print(f"\nresults: {latest} (and bench-{stamp}.json)" + (
        f", chart: {results['chart']}" if "chart" in results else ""
    ))  # fmt: skip
    return 0
