"""`make bench` at a tiny size, so the harness cannot rot: it runs, and its report is whole.

The numbers at this size mean nothing; only their presence and sign are checked. Without Node
the BullMQ baseline must say it is unavailable, and the rest must still run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.report import TARGETS, profile_text, summarize_profile
from tests.support.config import ROOT

SYSTEMS = {"shopjobs", "arq", "saq", "bullmq"}


def _positive_run(run: dict, system: str) -> None:
    assert run["system"] == system
    assert run["done"] == run["n"] > 0 and run["complete"] is True, run
    assert run["jobs_per_second"] > 0 and run["wall_seconds"] > 0, run


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

    assert [row["key"] for row in data["targets"]] == [key for key, *_ in TARGETS]
    for row in data["targets"]:
        assert row["value"] is not None and row["met"] in (True, False)
        # A spread (how far apart the cost at each backlog is) may be 0; the rest are rates.
        assert row["value"] >= 0 if row["key"].endswith("spread") else row["value"] > 0
    assert "Targets" in result.stdout and "end-to-end p99" in result.stdout

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
