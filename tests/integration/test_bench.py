"""`make bench` at a tiny size, so the harness cannot rot: it runs, and its report is whole.

The numbers at this size mean nothing as performance, so none is held to a target; what is
checked is that each is there, is consistent with the runs it is computed from, and is judged
and printed with the right verdict. Without Node
the BullMQ baseline must say it is unavailable, and the rest must still run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import TARGETS, profile_text, summarize_profile
from tests.support.config import ROOT

SYSTEMS = {"shopjobs", "arq", "saq", "celery", "procrastinate", "streaq", "bullmq"}
PEERS = ("celery", "procrastinate", "streaq")  # issue 27: installed by the bench extra


def _positive_run(run: dict, system: str) -> None:
    assert run["system"] == system
    assert run["done"] == run["n"] > 0 and run["complete"] is True, run
    assert run["jobs_per_second"] > 0 and run["wall_seconds"] > 0, run


def _ratio(a: float, b: float, digits: int = 3) -> float:
    assert b > 0
    return round(a / b, digits)


def _spread(values: list[float]) -> float:
    """How far apart the take's cost at each backlog is: (largest - smallest) / smallest."""
    assert values and min(values) > 0
    return round((max(values) - min(values)) / min(values), 3)


def _ratio_or_none(a: float | None, b: float | None, digits: int = 3) -> float | None:
    """A ratio against a peer that may be unavailable (then the target is n/a)."""
    return None if a is None or b is None else _ratio(a, b, digits)


def _target_figures(data: dict) -> dict[str, float | None]:
    """Each target's figure, read or recomputed from the report's own measurements."""
    best: dict[str, float] = {}
    for name, system in data["throughput"]["systems"].items():
        rates = [run["jobs_per_second"] for run in system["runs"] if run["concurrency"] == 50]
        if rates:
            best[name] = max(rates)
    enqueue, scaling, bulk, fair = data["enqueue"], data["scaling"], data["bulk"], data["fairness"]
    waits = data["waits"]
    assert enqueue["ratio"] == _ratio(enqueue["process"]["rps"], enqueue["bare"]["rps"])
    two, one = scaling["two"]["jobs_per_second"], scaling["one"]["jobs_per_second"]
    assert scaling["ratio"] == _ratio(two, one)
    assert bulk["points_vs_paging"] == _ratio(bulk["points_spent"], bulk["paging_points"], 5)
    limit = 2 * fair["idle"]["small_wait_p99_ms"] + 50
    fair_p99 = max(run["small_wait_p99_ms"] for run in fair["fair_runs"])  # the worst fair run
    waits_limit = 2 * waits["idle"]["short_wait_p99_ms"] + 50
    burst = data["burst"]
    ran = [job for job in burst["jobs"] if job["started_after_last_s"] is not None]
    last_input = burst["last_input"]
    cost = data["cost"]["systems"]
    ours_noop, theirs_noop = cost["shopjobs"]["noop"], cost.get("procrastinate", {}).get("noop")
    return {
        "throughput_vs_arq": _ratio(best["shopjobs"], best["arq"]),
        "throughput_vs_saq": _ratio(best["shopjobs"], best["saq"]),
        **{
            f"throughput_vs_{peer}": _ratio_or_none(best["shopjobs"], best.get(peer))
            for peer in ("celery", "procrastinate", "streaq", "bullmq")
        },
        "pg_cpu_vs_procrastinate": _ratio_or_none(
            ours_noop["pg_cpu_us_per_job"], theirs_noop and theirs_noop["pg_cpu_us_per_job"]
        ),
        "wal_vs_procrastinate": _ratio_or_none(
            ours_noop["wal_bytes_per_job"], theirs_noop and theirs_noop["wal_bytes_per_job"]
        ),
        "latency_p50_ms": data["latency"]["p50_ms"],
        "latency_p99_ms": data["latency"]["p99_ms"],
        "enqueue_vs_bare": enqueue["ratio"],
        "scaling_two_vs_one": scaling["ratio"],
        "bulk_memory_growth_mb": bulk["memory_growth_mb"],
        "bulk_points_vs_paging": bulk["points_vs_paging"],
        "fair_p99_vs_limit": _ratio(fair_p99, limit),
        "fair_work_conservation": _ratio(
            fair["fair"]["jobs_per_second"], fair["fifo"]["jobs_per_second"]
        ),
        "fair_commands_spread": _spread([cost["commands_per_job"] for cost in fair["cost"]]),
        "fair_cpu_spread": _spread([cost["redis_cpu_us_per_job"] for cost in fair["cost"]]),
        "waits_p99_vs_limit": _ratio(waits["waits"]["short_wait_p99_ms"], waits_limit),
        "waits_slots_held": waits["slots_held_max"],
        "waits_completion_lag_s": max(waits["completion_lags_s"]),
        "burst_jobs_ran": len(ran),
        "burst_last_input": float(
            bool(ran) and all(job["input"] == job["result"] == last_input for job in ran)
        ),
        "burst_start_after_last_s": min(job["started_after_last_s"] for job in ran),
        "burst_events_recorded": burst["events_recorded"],
        "burst_non_200": sum(n for code, n in burst["answers_by_code"].items() if code != "200"),
    }


def test_the_harness_runs_at_a_tiny_size_and_reports_everything(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--out", str(tmp_path), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["mode"] == "tiny" and data["services"]["durable"] is False
    assert list(tmp_path.glob("bench-*.json")), "no timestamped copy"
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    systems = data["throughput"]["systems"]
    assert set(systems) == SYSTEMS
    for name in ("shopjobs", "arq", "saq"):
        assert systems[name]["available"] is True
        concurrencies = sorted(run["concurrency"] for run in systems[name]["runs"])
        assert set(concurrencies) == {10, 50}
        for run in systems[name]["runs"]:
            _positive_run(run, name)
    for run in systems["shopjobs"]["runs"]:
        assert run["settings"]["rows_completed"] == run["n"]
    bullmq = systems["bullmq"]
    if bullmq["available"]:
        assert {run["concurrency"] for run in bullmq["runs"]} == {10, 50}
        for run in bullmq["runs"]:
            _positive_run(run, "bullmq")
    else:
        assert bullmq["reason"] and bullmq["runs"] == []
    for name in PEERS:  # Celery, Procrastinate, streaq: run, or say why not (never fail)
        peer = systems[name]
        if peer["available"]:
            assert {run["concurrency"] for run in peer["runs"]} == {10, 50}
            for run in peer["runs"]:
                _positive_run(run, name)
        else:
            assert peer["reason"] and peer["runs"] == []
            assert f"{name}: unavailable" in result.stdout

    # The cost per job on Postgres and Redis (bench/cost.py), and the ceilings from it.
    cost = data["cost"]
    assert set(cost["systems"]["shopjobs"]) == {"noop", "sleep_20ms"}
    assert cost["procrastinate"]["available"] is ("procrastinate" in cost["systems"])
    for system, kinds in cost["systems"].items():
        for kind, run in kinds.items():
            assert run["jobs"] == (100 if kind == "noop" else 40), run
            assert run["pg_cpu_us_per_job"] > 0 and run["wal_bytes_per_job"] > 0, run
            assert run["pg_core_jobs_per_second"] == round(1e6 / run["pg_cpu_us_per_job"])
            if system == "shopjobs":  # it uses Redis: commands and CPU, and so a ceiling
                assert run["redis_commands_per_job"] > 0 and run["redis_cpu_us_per_job"] > 0
                assert run["redis_core_jobs_per_second"] == round(1e6 / run["redis_cpu_us_per_job"])
            else:  # Procrastinate sends Redis nothing
                assert run["redis_commands_per_job"] == 0
                assert run["redis_core_jobs_per_second"] is None
    assert "Cost per job on the shared components" in result.stdout

    latency = data["latency"]
    assert latency["jobs"] >= 1
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]

    enqueue = data["enqueue"]
    for route in ("bare", "process"):
        assert enqueue[route]["rps"] > 0 and enqueue[route]["ok"] == enqueue[route]["requests"]
    assert enqueue["process"]["rows_created"] >= enqueue["process"]["ok"]
    assert enqueue["ratio"] > 0

    scaling = data["scaling"]
    _positive_run(scaling["one"], "shopjobs")
    _positive_run(scaling["two"], "shopjobs")
    assert scaling["two"]["processes"] == 2 and scaling["ratio"] > 0
    assert [run["processes"] for run in scaling["runs"]] == [1, 2]

    bulk = data["bulk"]  # the inventory_report scenario: one bulk query for the catalogue
    assert bulk["products"] == 20 and bulk["variants"] > 0 and bulk["rows_per_second"] > 0
    assert 0 < bulk["points_spent"] < bulk["paging_points"]
    assert "inventory_report, one bulk query" in result.stdout

    fair = data["fairness"]  # bench/fairness.py: small shops beside a backlog, and the cost
    assert fair["shops"] == 20 and fair["backlog"] == 300
    for key, mode, processes in (
        ("idle", "shop", 1), ("fair", "shop", 1), ("fair_two_processes", "shop", 2),
        ("fifo", "fifo", 1),
    ):  # fmt: skip
        run = fair[key]
        assert (run["fairness"], run["processes"]) == (mode, processes)
        assert run["small_jobs"] > 0 and run["jobs_per_second"] > 0
    for key in ("idle", "fair", "fair_two_processes"):  # fair: every small job ran
        assert fair[key]["small_jobs_started"] == fair[key]["small_jobs"]
        assert 0 <= fair[key]["small_wait_p50_ms"] <= fair[key]["small_wait_p99_ms"]
    assert [cost["backlog"] for cost in fair["cost"]] == [100, 300]
    for cost in fair["cost"]:
        assert cost["commands_per_job"] > 0 and cost["redis_cpu_us_per_job"] > 0
    assert "Fairness: 20 shops" in result.stdout

    waits = data["waits"]  # bench/waits.py: short jobs beside reports waiting on Shopify
    assert waits["reports"] == waits["operations"] == waits["operations_completed"] == 10
    for key in ("idle", "waits"):  # every short job ran, in both windows
        run = waits[key]
        assert run["short_jobs"] > 0 and run["short_jobs_started"] == run["short_jobs"]
        assert 0 <= run["short_wait_p50_ms"] <= run["short_wait_p99_ms"] <= run["short_wait_max_ms"]
    assert waits["samples"] > 0 and 0 <= waits["slots_held_mean"] <= waits["slots_held_max"]
    assert 0 <= waits["reports_waiting_min"] <= 10
    assert len(waits["completion_lags_s"]) == 10  # one per report, against its own operation
    assert "Waits: 10 shops' inventory_report" in result.stdout

    burst = data["burst"]  # bench/burst.py: webhooks for one product, collapsed by a debounce
    assert burst["webhooks"] == 100 and burst["debounce_seconds"] == 5
    assert sum(burst["answers_by_code"].values()) == 100
    assert sum(burst["answers_by_status"].values()) == burst["answers_by_code"].get("200", 0)
    assert burst["last_input"]["n"] == 99  # the last one sent, after every other was answered
    assert burst["jobs_created"] == len(burst["jobs"]) >= burst["jobs_ran"] >= 1
    assert "Burst: 100 signed products/update webhooks" in result.stdout

    # Each target is read from the figure it names (ratios recomputed here from the runs),
    # judged by its own comparison, and printed with that verdict.
    measured = _target_figures(data)
    assert [row["key"] for row in data["targets"]] == [key for key, *_ in TARGETS] == [*measured]
    assert "Targets" in result.stdout
    for row in data["targets"]:
        value = row["value"]
        if value is None:  # only a peer that was unavailable leaves its target n/a
            assert measured[row["key"]] is None and row["met"] is None, row
            printed = rf"^  {re.escape(row['what'])} +n/a +{re.escape(row['op'])} .*   n/a$"
            assert re.search(printed, result.stdout, re.MULTILINE), (printed, result.stdout)
            continue
        assert value == pytest.approx(measured[row["key"]], abs=1e-3), row
        judged = {"==": value == row["target"], ">=": value >= row["target"]}
        assert row["met"] is judged.get(row["op"], value <= row["target"])
        printed = (
            rf"^  {re.escape(row['what'])} +{re.escape(f'{value:,.2f}')} +"
            rf"{re.escape(row['op'])} {row['target']:g}   {'met' if row['met'] else 'NOT met'}$"
        )
        assert re.search(printed, result.stdout, re.MULTILINE), (printed, result.stdout)

    # The tiny size profiles too (briefly). Where py-spy may not attach (no root, ptrace
    # restricted) a profile says why instead.
    profile = data["profile"]
    assert Path(profile["file"]).exists()
    for name in ("worker", "web"):
        if "error" in profile[name]:
            assert profile[name]["error"]
        else:
            assert profile[name]["samples"] > 0 and profile[name]["own_by_package"]


def test_profile_summary_ranks_functions_packages_and_the_projects_own_steps(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "profile.raw"
    site = "/venv/lib/python3.11/site-packages"
    raw.write_text(
        f"main ({site}/arq/worker.py:10);run_job (jobs/worker/runner.py:80);"
        f"claim_job (service/store.py:440);_do_execute ({site}/asyncpg/connection.py:9) 30\n"
        f"main ({site}/arq/worker.py:10);run_job (jobs/worker/runner.py:95);"
        "emit (/usr/lib/python3.11/logging/__init__.py:1100) 20\n"
        f"main ({site}/arq/worker.py:12) 50\n"
        "not a stack line\n"
    )
    summary = summarize_profile(raw)
    assert summary["samples"] == 100
    own = {row["function"]: row["percent"] for row in summary["top_own"]}
    assert own == {
        "main (arq/worker.py)": 50.0,
        "_do_execute (asyncpg/connection.py)": 30.0,
        "emit (logging/__init__.py)": 20.0,
    }
    packages = {row["package"]: row["percent"] for row in summary["own_by_package"]}
    assert packages == {"arq": 50.0, "asyncpg": 30.0, "logging": 20.0}
    project = {row["function"]: row["percent"] for row in summary["top_inclusive_project"]}
    assert project == {
        "run_job (jobs/worker/runner.py)": 50.0,
        "claim_job (service/store.py)": 30.0,
    }
    text = profile_text(summary)
    assert "50.0%  arq" in text and "30.0%  claim_job (service/store.py)" in text
