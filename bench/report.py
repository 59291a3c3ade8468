"""What a run leaves behind: the ratios against the targets (issues 7, 14, 24 and 28), a table,
JSON and a chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Every system of the throughput runs, in the table's and the chart's order.
SYSTEMS = ["shopjobs", "arq", "saq", "celery", "procrastinate", "streaq", "bullmq"]

# (key, what, how the value compares to the target, target)
TARGETS = [
    ("throughput_vs_arq", "throughput c=50 / raw arq (best poll_delay)", ">=", 2.0),
    ("throughput_vs_saq", "throughput c=50 / SAQ", ">=", 2.0),
    # Issue 27: the other Python peers, BullMQ, and the Postgres cost against Procrastinate's
    ("throughput_vs_celery", "throughput c=50 / Celery", ">=", 2.0),
    ("throughput_vs_procrastinate", "throughput c=50 / Procrastinate", ">=", 2.0),
    ("throughput_vs_streaq", "throughput c=50 / streaq", ">=", 2.0),
    ("throughput_vs_bullmq", "throughput c=50 / BullMQ", ">=", 0.35),
    ("pg_cpu_vs_procrastinate", "Postgres CPU/job / Procrastinate's, no-op", "<=", 0.5),
    ("wal_vs_procrastinate", "WAL bytes/job / Procrastinate's, no-op", "<=", 0.5),
    ("latency_p50_ms", "end-to-end p50 (ms)", "<=", 30.0),
    ("latency_p99_ms", "end-to-end p99 (ms)", "<=", 100.0),
    ("enqueue_vs_bare", "enqueue endpoint / bare route (req/s)", ">=", 0.5),
    ("scaling_two_vs_one", "2 worker processes / 1 (20 ms jobs)", ">=", 1.5),
    ("bulk_memory_growth_mb", "inventory_report: worker memory growth (MB)", "<=", 60.0),
    ("bulk_points_vs_paging", "inventory_report: Admin points / paging's", "<=", 0.01),
    ("fair_p99_vs_limit", "fairness: small p99 / (2x idle p99 + 50 ms)", "<=", 1.0),
    ("fair_work_conservation", "fairness: jobs/s fair / fifo, same work", ">=", 0.9),
    ("fair_commands_spread", "fairness: Redis commands/job, spread", "<=", 0.2),
    ("fair_cpu_spread", "fairness: Redis CPU/job, spread", "<=", 0.2),
    ("waits_p99_vs_limit", "waits: short p99 / (2x idle p99 + 50 ms)", "<=", 1.0),
    ("waits_slots_held", "waits: worker slots held by waiting reports", "<=", 0.0),
    ("waits_completion_lag_s", "waits: report done after its operation (s)", "<=", 1.0),
    ("burst_jobs_ran", "burst: jobs run for 100 webhooks", "==", 1.0),
    ("burst_last_input", "burst: ran with the last payload (1 = yes)", "==", 1.0),
    ("burst_start_after_last_s", "burst: start after the last webhook (s)", "<=", 6.0),
    ("burst_events_recorded", "burst: events recorded in webhook_events", "==", 100.0),
    ("burst_non_200", "burst: webhooks answered other than 200", "<=", 0.0),
]
# The section of the results each target reads (by its key's first word): `--only` runs some.
SECTIONS = {
    "throughput": "throughput", "latency": "latency", "enqueue": "enqueue",
    "scaling": "scaling", "bulk": "bulk", "fair": "fairness", "waits": "waits",
    "burst": "burst", "pg": "cost", "wal": "cost",
}  # fmt: skip


def best_runs(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per concurrency, each system's best run (arq: its best poll_delay)."""
    best: dict[str, dict[str, dict[str, Any]]] = {}
    for system, entry in results["throughput"]["systems"].items():
        for run in entry.get("runs", []):
            slot = best.setdefault(str(run["concurrency"]), {})
            if system not in slot or run["jobs_per_second"] > slot[system]["jobs_per_second"]:
                slot[system] = run
    return best


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 3)


def _rate(best: dict[str, dict[str, Any]], system: str) -> float | None:
    run = best.get(system)
    return None if run is None else run["jobs_per_second"]


def _cost_ratio(results: dict[str, Any], key: str) -> float | None:
    """shopjobs' cost per no-op job over Procrastinate's (None when it could not run)."""
    compared = results.get("cost", {}).get("vs_procrastinate", {}).get("noop")
    return None if compared is None else compared[key]


def _values(results: dict[str, Any]) -> dict[str, float | None]:
    """Each target's figure, from the sections of the results the run has."""
    values: dict[str, float | None] = {}
    if "throughput" in results:
        best = best_runs(results).get("50", {})
        ours = _rate(best, "shopjobs")
        values["throughput_vs_arq"] = _ratio(ours, _rate(best, "arq"))
        values["throughput_vs_saq"] = _ratio(ours, _rate(best, "saq"))
        for peer in ("celery", "procrastinate", "streaq", "bullmq"):
            values[f"throughput_vs_{peer}"] = _ratio(ours, _rate(best, peer))
    if "cost" in results:
        values["pg_cpu_vs_procrastinate"] = _cost_ratio(results, "pg_cpu")
        values["wal_vs_procrastinate"] = _cost_ratio(results, "wal_bytes")
    if "latency" in results:
        values["latency_p50_ms"] = results["latency"]["p50_ms"]
        values["latency_p99_ms"] = results["latency"]["p99_ms"]
    if "enqueue" in results:
        values["enqueue_vs_bare"] = results["enqueue"]["ratio"]
    if "scaling" in results:
        values["scaling_two_vs_one"] = results["scaling"]["ratio"]
    if "bulk" in results:
        values["bulk_memory_growth_mb"] = results["bulk"]["memory_growth_mb"]
        values["bulk_points_vs_paging"] = results["bulk"]["points_vs_paging"]
    if "fairness" in results:
        fair = results["fairness"]
        values["fair_p99_vs_limit"] = fair["p99_vs_limit"]
        values["fair_work_conservation"] = fair["work_conservation"]
        values["fair_commands_spread"] = fair["commands_spread"]
        values["fair_cpu_spread"] = fair["cpu_spread"]
    if "waits" in results:
        waits = results["waits"]
        values["waits_p99_vs_limit"] = waits["p99_vs_limit"]
        values["waits_slots_held"] = waits["slots_held_max"]
        values["waits_completion_lag_s"] = waits["completion_lag_max_s"]
    if "burst" in results:
        burst = results["burst"]
        values["burst_jobs_ran"] = burst["jobs_ran"]
        values["burst_last_input"] = 1.0 if burst["ran_with_last_input"] else 0.0
        values["burst_start_after_last_s"] = burst["start_after_last_s"]
        values["burst_events_recorded"] = burst["events_recorded"]
        values["burst_non_200"] = burst["non_200"]
    return values


def judge(value: float | None, op: str, target: float) -> bool | None:
    """Whether `value` meets the target by `op` (>=, <= or ==); None when nothing was measured."""
    if value is None:
        return None
    if op == "==":
        return value == target
    return value >= target if op == ">=" else value <= target


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target whose section was run: the measured value, the target, and whether
    it is met."""
    values = _values(results)
    rows = []
    for key, what, op, target in TARGETS:
        if SECTIONS[key.split("_", 1)[0]] not in results:
            continue
        value = values[key]
        met = judge(value, op, target)
        rows.append(
            {"key": key, "what": what, "value": value, "op": op, "target": target, "met": met}
        )
    return rows


def _cpu(cpu: dict[str, float | None]) -> str:
    """`worker 97% (sys 21%), postgres 55%, ...`: who used the cores, in % of one core."""
    parts = []
    for name in ("worker", "web", "postgres", "redis", "machine"):
        value = cpu.get(f"{name}_cpu_percent")
        if value is None:
            continue
        system = cpu.get(f"{name}_sys_percent")
        detail = f" (sys {system:.0f}%)" if system is not None and name in ("worker", "web") else ""
        parts.append(f"{name} {value:.0f}%{detail}")
    return ", ".join(parts) or "n/a"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """The printed summary: measured figures, then every target with its ratio and verdict."""
    lines = [f"shopjobs benchmark ({results['mode']}, {results['started_at']})", ""]
    if "throughput" in results:
        lines += throughput_lines(results)
    if "cost" in results:
        lines += cost_lines(results.get("cost"))
    if "latency" in results:
        lat = results["latency"]
        lines += [
            "",
            f"End-to-end latency, {lat['jobs']} sequential jobs (POST -> status `completed`, "
            f"polled every {lat['poll_ms']:g} ms)",
            f"  p50 {lat['p50_ms']:.1f} ms   p95 {lat['p95_ms']:.1f} ms   p99 {lat['p99_ms']:.1f} "
            f"ms   (POST answer p50 {lat['post']['p50_ms']:.1f} ms)",
        ]
    if "enqueue" in results:
        enq = results["enqueue"]
        lines += [
            "",
            f"Enqueue endpoint, {enq['connections']} connections, {enq['seconds']:g} s each",
            *(
                f"  {name:<22}{enq[key]['rps']:>10,.0f} req/s   CPU: {_cpu(enq[key]['cpu'])}, "
                f"load generator {enq[key]['client_cpu_percent']:.0f}%"
                for name, key in (("bare route", "bare"), ("POST /proxy/process", "process"))
            ),
        ]
    if "scaling" in results:
        sc = results["scaling"]
        lines += [
            "",
            f"Scaling, {sc['one']['n']} jobs of {sc['sleep_ms']} ms, concurrency "
            f"{sc['one']['concurrency']} per process (best of {len(sc.get('runs', [])) // 2 or 1})",
            f"  1 process {sc['one']['jobs_per_second']:,.0f} jobs/s   "
            f"2 processes {sc['two']['jobs_per_second']:,.0f} jobs/s",
            f"  CPU, 1 process: {_cpu(sc['one'].get('cpu', {}))}; busy slots: mean "
            f"{sc['one']['settings'].get('arq_slots_busy_mean')} of {sc['one']['concurrency']}",
            f"  CPU, 2 processes: {_cpu(sc['two'].get('cpu', {}))}; busy slots: mean "
            f"{sc['two']['settings'].get('arq_slots_busy_mean')} of {2 * sc['two']['concurrency']}",
        ]
    if "bulk" in results:
        bk = results["bulk"]
        lines += [
            "",
            f"inventory_report, one bulk query: {bk['products']:,} products, "
            f"{bk['variants']:,} variants (emulator up in {bk['emulator_start_seconds']:g} s)",
            f"  {bk['job_seconds']:g} s, {_fmt(bk['rows_per_second'], 0)} rows/s; worker memory "
            f"{bk['worker_rss_before_mb']:g} MB before, {bk['worker_peak_mb']:g} MB at peak "
            f"(+{bk['memory_growth_mb']:g} MB)",
            f"  Admin API points {bk['points_spent']:,} in {bk['admin_requests']} requests; "
            f"paging the same data: {bk['paging_points']:,} ({bk['points_vs_paging']:.3%})",
        ]
    if "fairness" in results:
        lines += ["", *fairness_lines(results["fairness"])]
    if "waits" in results:
        lines += ["", *waits_lines(results["waits"])]
    if "burst" in results:
        lines += ["", *burst_lines(results["burst"])]
    lines += ["", "Targets"]
    lines.append(f"  {'what':<46}{'measured':>10}{'target':>10}   result")
    for row in results["targets"]:
        verdict = {True: "met", False: "NOT met", None: "n/a"}[row["met"]]
        target = f"{row['op']} {row['target']:g}"
        lines.append(f"  {row['what']:<46}{_fmt(row['value']):>10}{target:>10}   {verdict}")
    if results.get("profile"):
        lines += ["", f"Profiles (py-spy) of the worker and the web: {results['profile']['file']}"]
    return "\n".join(lines)


def throughput_lines(results: dict[str, Any]) -> list[str]:
    """No-op throughput per system and concurrency, with CPU and busy slots."""
    lines = []
    best = best_runs(results)
    systems = [s for s in SYSTEMS if s in results["throughput"]["systems"]]
    lines.append("Worker throughput, no-op jobs (jobs/s; arq at its best poll_delay)")
    lines.append(f"  {'concurrency':<12}" + "".join(f"{s:>14}" for s in systems))
    for concurrency in sorted(best, key=int):
        row = best[concurrency]
        lines.append(
            f"  {concurrency:<12}" + "".join(f"{_fmt(_rate(row, s), 0):>14}" for s in systems)
        )
    for concurrency in sorted(best, key=int):
        run = best[concurrency].get("arq")
        if run is not None:
            delay = run["settings"]["poll_delay"]
            lines.append(f"  arq best poll_delay at c={concurrency}: {delay}")
    for system, entry in results["throughput"]["systems"].items():
        if not entry.get("available", True):
            lines.append(f"  {system}: unavailable ({entry.get('reason')})")
    for concurrency in sorted(best, key=int):
        for system in systems:
            run = best[concurrency].get(system)
            if run is not None:
                lines.append(f"  CPU at c={concurrency}, {system}: {_cpu(run.get('cpu', {}))}")
            if run is not None and "arq_slots_busy_mean" in run["settings"]:
                lines.append(
                    f"  busy slots at c={concurrency}, {system}: mean "
                    f"{run['settings']['arq_slots_busy_mean']:g}, "
                    f"max {run['settings']['arq_slots_busy_max']}"
                )
    for concurrency in sorted(best, key=int):
        row = best[concurrency]
        ours = _rate(row, "shopjobs")
        ratios = ", ".join(
            f"/{s} {_fmt(_ratio(ours, _rate(row, s)))}x" for s in systems[1:] if s in row
        )
        lines.append(f"  shopjobs at c={concurrency}: {ratios}")
    return lines


def waits_lines(waits: dict[str, Any]) -> list[str]:
    """The waits scenario (bench/waits.py): short jobs beside reports waiting on Shopify."""
    lines = [
        f"Waits: {waits['reports']} shops' inventory_report on {waits['run_seconds']:g} s bulk "
        f"operations, beside {waits['traffic_shops']} shops' {waits['sleep_ms']} ms jobs at "
        f"{waits['rate_per_second']:g}/s, one worker at concurrency {waits['concurrency']}",
        f"  {'short jobs':<28}{'p50 wait':>10}{'p99 wait':>10}{'max wait':>10}{'started':>12}",
    ]
    for key, name in (("idle", "idle (no reports)"), ("waits", "while the reports wait")):
        run = waits[key]
        started = f"{run['short_jobs_started']}/{run['short_jobs']}"
        lines.append(
            f"  {name:<28}{_fmt(run['short_wait_p50_ms'], 1):>10}"
            f"{_fmt(run['short_wait_p99_ms'], 1):>10}{_fmt(run['short_wait_max_ms'], 1):>10}"
            f"{started:>12}"
        )
    lines += [
        f"  short p99 limit (2x idle + 50 ms): {_fmt(waits['p99_limit_ms'], 1)} ms; reports all "
        f"suspended {waits['suspended_after_seconds']:g} s after they were queued",
        f"  slots held by the waiting reports: max {waits['slots_held_max']}, mean "
        f"{_fmt(waits['slots_held_mean'], 3)} over {waits['samples']} samples (reports "
        f"suspended: min {waits['reports_waiting_min']}; the worker's running gauge: max "
        f"{_fmt(waits['worker_running_max'], 0)})",
        f"  report completed after its operation's end: max "
        f"{_fmt(waits['completion_lag_max_s'], 3)} s "
        f"(all: {', '.join(f'{lag:g}' for lag in waits['completion_lags_s'])}); operations "
        f"{waits['operations_completed']}/{waits['operations']} completed",
    ]
    return lines


def burst_lines(burst: dict[str, Any]) -> list[str]:
    """The burst scenario (bench/burst.py): webhooks for one product collapsed by a debounce."""
    codes = ", ".join(f"{k}: {v}" for k, v in burst["answers_by_code"].items())
    ran = [job for job in burst["jobs"] if job["started_after_last_s"] is not None]
    inputs = ", ".join(f"n={job['input']['n']}" for job in ran) or "none"
    statuses = ", ".join(f"{job['status']} (attempts {job['attempts']})" for job in burst["jobs"])
    last = "yes" if burst["ran_with_last_input"] else "NO"
    answers = ", ".join(f"{k} {v}" for k, v in sorted(burst["answers_by_status"].items()))
    return [
        f"Burst: {burst['webhooks']} signed products/update webhooks for one product, sent in "
        f"{burst['burst_seconds']:g} s (goal {burst['window_seconds']:g} s), debounce "
        f"{burst['debounce_seconds']:g} s (max {burst['debounce_max_seconds']:g} s)",
        f"  answers: {codes} ({answers}); events recorded {burst['events_recorded']} over "
        f"{_fmt(burst['events_window_seconds'], 3)} s, linked to {burst['events_jobs_linked']} "
        f"job(s); answered in {_fmt(burst['answer_p50_ms'], 1)} ms at the median, "
        f"{_fmt(burst['answer_max_ms'], 1)} ms at most",
        f"  jobs created {burst['jobs_created']} ({statuses or 'none'}), run {burst['jobs_ran']} "
        f"with {inputs} (last sent: n={burst['last_input']['n']}); the last input: {last}",
        f"  started {_fmt(burst['start_after_last_s'], 3)} s after the last webhook was recorded "
        f"(goal <= {burst['start_limit_seconds']:g} s)",
    ]


def cost_lines(cost: dict[str, Any] | None) -> list[str]:
    """The cost per job on Postgres and Redis (bench/cost.py) and the ceilings it implies."""
    if not cost:
        return []
    lines = [
        "",
        "Cost per job on the shared components (queueing to done; Postgres: all its processes)",
        f"  {'system, job':<30}{'jobs/s':>8}{'PG CPU us':>11}{'WAL B':>8}{'Redis CPU us':>14}"
        f"{'Redis cmds':>12}{'1 PG core':>11}{'1 Redis core':>14}",
    ]
    for system, kinds in cost["systems"].items():
        for kind, run in kinds.items():
            lines.append(
                f"  {f'{system}, {kind}':<30}{run['jobs_per_second']:>8,.0f}"
                f"{run['pg_cpu_us_per_job']:>11,.1f}{run['wal_bytes_per_job']:>8,.0f}"
                f"{run['redis_cpu_us_per_job']:>14,.1f}{run['redis_commands_per_job']:>12,.2f}"
                f"{_fmt(run['pg_core_jobs_per_second'], 0):>11}"
                f"{_fmt(run['redis_core_jobs_per_second'], 0):>14}"
            )
    if not cost["procrastinate"]["available"]:
        lines.append(f"  procrastinate: unavailable ({cost['procrastinate']['reason']})")
    for kind, compared in cost["vs_procrastinate"].items():
        lines.append(
            f"  shopjobs / procrastinate, {kind}: Postgres CPU {_fmt(compared['pg_cpu'])}x, "
            f"WAL {_fmt(compared['wal_bytes'])}x"
        )
    lines.append(
        "  1 PG core / 1 Redis core: the jobs/s that would keep one core of that server busy"
    )
    return lines


def fairness_lines(fair: dict[str, Any]) -> list[str]:
    """The fairness scenario (bench/fairness.py): waits, jobs/s, and the take's cost."""
    lines = [
        f"Fairness: {fair['shops']:,} shops, Zipf traffic {fair['rate_per_second']:g} jobs/s of "
        f"{fair['sleep_ms']} ms, beside one shop's backlog of {fair['backlog']:,}",
        f"  {'scenario':<28}{'p50 wait':>10}{'p99 wait':>10}{'started':>12}{'jobs/s':>9}",
    ]
    for key, name in (
        ("idle", "idle (no backlog), fair"),
        ("fair", "backlog, fair, 1 process"),
        ("fair_two_processes", "backlog, fair, 2 processes"),
        ("fifo", "backlog, fifo, 1 process"),
    ):
        run = fair[key]
        started = f"{run['small_jobs_started']}/{run['small_jobs']}"
        lines.append(
            f"  {name:<28}{_fmt(run['small_wait_p50_ms'], 1):>10}"
            f"{_fmt(run['small_wait_p99_ms'], 1):>10}{started:>12}"
            f"{_fmt(run['jobs_per_second'], 0):>9}"
        )
    lines.append(
        f"  small shops' p99 limit (2x idle + 50 ms): {_fmt(fair['p99_limit_ms'], 1)} ms, worst "
        f"fair p99 {_fmt(fair['fair_p99_worst_ms'], 1)} ms; work conservation (fair / fifo "
        f"jobs/s, best of {fair['repeats']}): {_fmt(fair['work_conservation'])}"
    )
    lines.append(
        "  cost, no-op jobs (median window):  backlog  commands/job  Redis CPU us/job  jobs/s"
    )
    for cost in fair["cost"]:
        lines.append(
            f"  {'':<33}{cost['backlog']:>9,}{cost['commands_per_job']:>14.2f}"
            f"{cost['redis_cpu_us_per_job']:>18.1f}{cost['jobs_per_second']:>8,.0f}"
        )
    lines.append(
        f"  spread across backlogs: commands {_fmt(fair['commands_spread'], 3)}, "
        f"CPU {_fmt(fair['cpu_spread'], 3)}"
    )
    return lines


def write_json(
    results: dict[str, Any], directory: Path, stamp: str, latest_name: str = "latest.json"
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    (directory / f"bench-{stamp}.json").write_text(text)
    latest = directory / latest_name
    latest.write_text(text)
    return latest


def chart(results: dict[str, Any], path: Path) -> Path:
    """Four panels: throughput, latency, enqueue rate, scaling; targets drawn where they apply."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    best = best_runs(results)
    systems = [s for s in SYSTEMS if s in results["throughput"]["systems"]]
    colors = {"shopjobs": "#2b7a78", "arq": "#8a8a8a", "saq": "#d08c2e", "bullmq": "#7057a3",
              "celery": "#4f8f3a", "procrastinate": "#336791", "streaq": "#b5485d"}  # fmt: skip

    ax = axes[0][0]
    concurrencies = sorted(best, key=int)
    width = 0.8 / len(systems)
    for index, system in enumerate(systems):
        xs, ys = [], []
        for position, concurrency in enumerate(concurrencies):
            rate = _rate(best[concurrency], system)
            if rate is not None:
                xs.append(position + (index - (len(systems) - 1) / 2) * width)
                ys.append(rate)
        if xs:
            label = "arq (best poll_delay)" if system == "arq" else system
            bars = ax.bar(xs, ys, width, label=label, color=colors[system])
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(concurrencies)), [f"concurrency {c}" for c in concurrencies])
    ax.set_ylabel("jobs/s")
    ax.set_title("Worker throughput, no-op jobs (shopjobs mirrors to Postgres)")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    lat = results["latency"]
    names = ["p50", "p95", "p99"]
    values = [lat["p50_ms"], lat["p95_ms"], lat["p99_ms"]]
    bars = ax.bar(names, values, color=colors["shopjobs"])
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.axhline(30, color="#c0392b", linestyle="--", linewidth=1, label="p50 target 30 ms")
    ax.axhline(100, color="#c0392b", linestyle=":", linewidth=1, label="p99 target 100 ms")
    ax.set_ylabel("ms")
    ax.set_title(f"End-to-end latency, {lat['jobs']} jobs (POST -> completed)")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    enq = results["enqueue"]
    bars = ax.bar(
        ["bare route", "POST /proxy/process"],
        [enq["bare"]["rps"], enq["process"]["rps"]],
        color=["#8a8a8a", colors["shopjobs"]],
    )
    ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.axhline(
        enq["bare"]["rps"] * 0.5, color="#c0392b", linestyle="--", linewidth=1,
        label="target: 0.5x bare",
    )  # fmt: skip
    ax.set_ylabel("requests/s")
    ax.set_title(f"Enqueue endpoint, {enq['connections']} connections (ratio {enq['ratio']:.2f})")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    sc = results["scaling"]
    one = sc["one"]["jobs_per_second"]
    bars = ax.bar(
        ["1 worker process", "2 worker processes"],
        [one, sc["two"]["jobs_per_second"]],
        color=[colors["arq"], colors["shopjobs"]],
    )
    ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.axhline(one * 1.5, color="#c0392b", linestyle="--", linewidth=1, label="target: 1.5x one")
    ax.set_ylabel("jobs/s")
    ax.set_title(f"Scaling, {sc['sleep_ms']} ms jobs (ratio {sc['ratio']:.2f})")
    ax.legend(fontsize=8)

    fig.suptitle(
        f"shopjobs benchmark - {results['mode']} - {results['started_at']} - "
        f"{results['machine']['cpus']} CPUs",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summarize_profile(raw: Path, top: int = 20) -> dict[str, Any]:
    """A py-spy raw (collapsed stacks) file, ranked three ways.

    - `top_own`: functions by the samples in which they were the innermost frame;
    - `own_by_package`: the same samples added up by package (asyncpg, redis, sqlalchemy,
      logging, the project's jobs/ and service/...), which says which layer costs most;
    - `top_inclusive_project`: the project's own functions by the samples they were anywhere
      in, i.e. what each of its steps costs with everything it calls.
    """
    own: dict[str, int] = {}
    packages: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_split_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        name, path = frames[-1]
        own[_label(name, path)] = own.get(_label(name, path), 0) + count
        package = _package(path)
        packages[package] = packages.get(package, 0) + count
        for label in {_label(n, p) for n, p in frames if _package(p) in PROJECT_PACKAGES}:
            inclusive[label] = inclusive.get(label, 0) + count

    def ranked(counts: dict[str, int], key: str) -> list[dict[str, Any]]:
        items = sorted(counts.items(), key=lambda item: item[1], reverse=True)[:top]
        return [
            {key: name, "samples": n, "percent": round(100 * n / total, 1)} for name, n in items
        ]

    return {
        "samples": total,
        "top_own": ranked(own, "function"),
        "own_by_package": ranked(packages, "package"),
        "top_inclusive_project": ranked(inclusive, "function"),
    }


PROJECT_PACKAGES = {"jobs", "service", "bench"}
_ROOT = Path(__file__).resolve().parent.parent


def _split_frame(frame: str) -> tuple[str, str]:
    """`func (/path/to/module.py:123)` -> (`func`, `/path/to/module.py`)."""
    name, _, where = frame.partition(" (")
    return name, where.rstrip(")").rsplit(":", 1)[0]


def _label(name: str, path: str) -> str:
    """`func (redis/asyncio/connection.py)`: the file from its package's root."""
    if not path:
        return name
    if "site-packages/" in path:
        short = path.split("site-packages/", 1)[1]
    elif path.startswith(str(_ROOT) + "/"):
        short = path[len(str(_ROOT)) + 1 :]
    elif "/python3" in path:
        short = path.split("/python3", 1)[1].split("/", 1)[-1]
    elif path.split("/", 1)[0] in PROJECT_PACKAGES:  # a relative path into the project
        short = path
    else:
        short = "/".join(path.split("/")[-2:])
    return f"{name} ({short})"


def _package(path: str) -> str:
    """The package a frame's file belongs to: `asyncpg`, `asyncio`, `jobs`, `<frozen>`..."""
    if path.startswith("<"):
        return "importlib" if "importlib" in path else path
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if path.startswith(str(_ROOT) + "/"):
        return path[len(str(_ROOT)) + 1 :].split("/", 1)[0]
    parts = path.split("/")
    for index, part in enumerate(parts[:-1]):
        if part.startswith("python3"):  # the standard library: lib/python3.11/asyncio/...
            return parts[index + 1].removesuffix(".py")
    return parts[0].removesuffix(".py") if len(parts) > 1 else path.removesuffix(".py")


def profile_text(summary: dict[str, Any]) -> str:
    lines = [f"py-spy samples: {summary['samples']}", "", "Own time by package:"]
    lines += [f"  {r['percent']:5.1f}%  {r['package']}" for r in summary["own_by_package"]]
    lines += ["", "Top functions by own time:"]
    lines += [f"  {r['percent']:5.1f}%  {r['function']}" for r in summary["top_own"]]
    lines += ["", "The project's functions by inclusive time (with all they call):"]
    lines += [f"  {r['percent']:5.1f}%  {r['function']}" for r in summary["top_inclusive_project"]]
    return "\n".join(lines) + "\n"
