"""The fault suite only: its figures printed at the end of the session (tests/support/faults.py)."""

from __future__ import annotations

import pytest

from tests.support import faults


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures each scenario recorded, when any of the fault suite ran."""
    if faults.FIGURES:
        for line in faults.summary_lines():
            terminalreporter.write_line(line)
