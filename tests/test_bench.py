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
from tests.conftest import ROOT

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

    assert [row["key"] for row in data["targets"]] == [key for key, *_ in TARGETS]
    for row in data["targets"]:
        assert row["value"] is not None and row["value"] > 0 and row["met"] in (True, False)
    assert "Targets" in result.stdout and "end-to-end p99" in result.stdout


def test_profile_summary_ranks_functions_by_own_and_inclusive_samples(tmp_path: Path) -> None:
    raw = tmp_path / "profile.raw"
    raw.write_text(
        "main (arq/worker.py:10);run_job (jobs/runner.py:80);claim_job (service/store.py:440) 30\n"
        "main (arq/worker.py:10);run_job (jobs/runner.py:95);complete_job (service/store.py:495) 20\n"
        "main (arq/worker.py:12) 50\n"
    )
    summary = summarize_profile(raw)
    assert summary["samples"] == 100
    own = {row["function"]: row["percent"] for row in summary["top_own"]}
    assert own == {
        "main (arq/worker.py)": 50.0,
        "claim_job (service/store.py)": 30.0,
        "complete_job (service/store.py)": 20.0,
    }
    inclusive = {row["function"]: row["percent"] for row in summary["top_inclusive"]}
    assert inclusive["main (arq/worker.py)"] == 100.0
    assert inclusive["run_job (jobs/runner.py)"] == 50.0
    assert "50.0%  main (arq/worker.py)" in profile_text(summary)
