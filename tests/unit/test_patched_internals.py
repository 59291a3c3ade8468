"""Private internals of pinned dependencies are touched in one module each, and guarded.

arq is maintenance-only upstream and pinned exactly: jobs/worker/process.py overrides private
parts of its Worker. When the pin moves, this test names that module and what moved.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import arq.worker
import pytest
from arq.version import VERSION

from jobs.worker import process
from tests.support.config import ROOT


def test_arq_is_the_release_the_worker_overrides() -> None:
    assert VERSION == process.ARQ_VERSION, (
        f"jobs/worker/process.py overrides arq {process.ARQ_VERSION}'s private worker internals;"
        f" arq {VERSION} is installed: re-check ShopjobsWorker against it, then move ARQ_VERSION"
    )
    pin = re.search(r'"arq==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin is not None and pin.group(1) == process.ARQ_VERSION


@pytest.mark.parametrize("name", process.ARQ_PRIVATE_API)
def test_arqs_private_worker_api_is_still_there(name: str) -> None:
    # arq's own class: once a test has run install(), the name arq.worker.Worker is ours.
    source = inspect.getsource(process.ShopjobsWorker.__bases__[0])
    assert re.search(rf"def {name}\(|self\.{name}(: [^=]+)? =", source), (
        f"jobs/worker/process.py relies on arq's Worker.{name}, which arq {VERSION} lacks"
    )


def test_install_refuses_another_arq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "INSTALLED_ARQ_VERSION", "0.29.0")
    monkeypatch.setattr(arq.worker, "Worker", arq.worker.Worker)  # restored after the test
    with pytest.raises(process.ArqVersionMismatch, match=r"jobs/worker/process\.py"):
        process.install()


def test_only_the_worker_process_module_reaches_into_arqs_worker() -> None:
    """Subclassing or patching arq's Worker anywhere else would be a second, unguarded patch."""
    offenders = [
        path.relative_to(ROOT).as_posix()
        for folder in ("service", "jobs")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if re.search(r"arq\.worker\.Worker|\(Worker\)", path.read_text())
        and path != Path(process.__file__)
    ]
    assert offenders == []
