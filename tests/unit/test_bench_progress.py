"""`python -m bench` draws its progress bar only on a terminal (bench/harness.py): in a log,
each redraw would be one more carriage-return frame."""

from __future__ import annotations

import io

import pytest

from bench.harness import Bar, progress_wanted


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("turned_off", "out", "bar", "wanted"),
    [
        (False, Terminal(), Terminal(), True),
        (True, Terminal(), Terminal(), False),  # --no-progress
        (False, io.StringIO(), Terminal(), False),  # make bench > log
        (False, Terminal(), io.StringIO(), False),  # make bench 2> log
        (False, io.StringIO(), io.StringIO(), False),  # make bench > log 2>&1, CI
    ],
)
def test_a_bar_only_between_terminals(
    turned_off: bool, out: io.StringIO, bar: io.StringIO, wanted: bool
) -> None:
    assert progress_wanted(turned_off, out, bar) is wanted


def _run_steps(bar: Bar) -> None:
    for label in ("first", "second"):
        progress = bar.step(label)
        for done in range(1, 101):
            progress(done, 100)
        bar.done()
    bar.close()


def test_a_bar_not_wanted_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    _run_steps(Bar(2, enabled=progress_wanted(False, io.StringIO(), io.StringIO())))
    assert capsys.readouterr() == ("", "")


def test_a_wanted_bar_draws_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    _run_steps(Bar(2, enabled=progress_wanted(False, Terminal(), Terminal())))
    captured = capsys.readouterr()
    assert captured.out == "" and "\r" in captured.err
