"""Browser tests only: each phase's report kept on the test, so a fixture can tell at teardown
whether the test failed and save a screenshot (tests/support/browser.py: `item_failed`)."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.support.browser import PHASE_REPORTS


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report
