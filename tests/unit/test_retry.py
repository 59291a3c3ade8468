from jobs.types import NonRetryableError
from jobs.worker.retry import Decision, backoff_seconds, decide


def test_backoff_doubles_from_the_base() -> None:
    assert [backoff_seconds(5, n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff_seconds(5, 0) == 0
    assert backoff_seconds(5, 40) == 3600  # capped


def test_ordinary_errors_retry_until_attempts_run_out() -> None:
    assert decide(RuntimeError("x"), 1, 3, 5) == Decision(retry=True, delay=5)
    assert decide(RuntimeError("x"), 2, 3, 5) == Decision(retry=True, delay=10)
    assert decide(RuntimeError("x"), 3, 3, 5) == Decision(retry=False)


def test_timeouts_are_ordinary_failures() -> None:
    assert decide(TimeoutError(), 1, 2, 1).retry is True


def test_non_retryable_errors_fail_at_once() -> None:
    assert decide(NonRetryableError("gone"), 1, 3, 5) == Decision(retry=False)
    assert decide(KeyError("k"), 1, 3, 5, non_retryable=(KeyError,)) == Decision(retry=False)
    assert decide(ValueError("v"), 1, 3, 5, non_retryable=(KeyError,)).retry is True
