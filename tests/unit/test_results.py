"""jobs/worker/results.py: what a handler returns becomes storable JSON, or fails at once."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum

import orjson
import pytest
from pydantic import BaseModel

from jobs.types import NonRetryableError
from jobs.worker.results import (
    MAX_ERROR_CHARS,
    UnstorableResult,
    encode_result,
    storable_error,
)

LIMIT = 1_048_576


class Price(BaseModel):
    amount: Decimal
    currency: str


@dataclasses.dataclass
class Line:
    sku: str
    at: date


class Color(Enum):
    RED = "red"


def test_app_developers_types_are_encoded() -> None:
    job = uuid.UUID("12345678-1234-5678-1234-567812345678")
    result = {
        "price": Decimal("19.90"),
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "id": job,
        "model": Price(amount=Decimal("1.5"), currency="EUR"),
        "lines": (Line("A-1", date(2026, 1, 2)),),
        "color": Color.RED,
        "plain": [1, 2.5, True, None, "x"],
    }
    assert orjson.loads(encode_result(result, LIMIT)) == {
        "price": "19.90",
        "when": "2026-01-02T03:04:05+00:00",
        "id": str(job),
        "model": {"amount": "1.5", "currency": "EUR"},
        "lines": [{"sku": "A-1", "at": "2026-01-02"}],
        "color": "red",
        "plain": [1, 2.5, True, None, "x"],
    }


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"items": [1, 2, 3, {4}]}, 'result["items"][3]: cannot store a set'),
        ({"a": {"b": object()}}, 'result["a"]["b"]: cannot store a object'),
        ({1: "x"}, "result: cannot store a int key (1); keys are text"),
        ({"n": float("nan")}, 'result["n"]: cannot store the float nan (JSON has none)'),
        ({"d": Decimal("Infinity")}, 'result["d"]: cannot store the Decimal Infinity'),
        (b"bytes", "result: cannot store a bytes"),
    ],
)
def test_anything_else_is_refused_naming_type_and_place(result: object, message: str) -> None:
    with pytest.raises(UnstorableResult) as caught:
        encode_result(result, LIMIT)
    assert str(caught.value) == message
    assert isinstance(caught.value, NonRetryableError)  # retrying cannot make it storable


def test_a_result_over_the_cap_is_refused() -> None:
    assert encode_result("x" * 10, 12) == b'"xxxxxxxxxx"'
    with pytest.raises(UnstorableResult, match="is 13 bytes encoded, over the 12-byte limit"):
        encode_result("x" * 11, 12)


def test_nul_and_lone_surrogates_in_results_and_errors_are_replaced() -> None:
    assert orjson.loads(encode_result({"a\x00": "b\x00\ud800"}, LIMIT)) == {
        "a\ufffd": "b\ufffd\ufffd"
    }
    assert storable_error("bad\x00byte \udcff") == "bad\ufffdbyte \ufffd"


def test_long_errors_are_cut() -> None:
    cut = storable_error("e" * 5000)
    assert len(cut) == MAX_ERROR_CHARS and cut.endswith("… (cut)")
    assert storable_error("short") == "short"


def test_an_int_beyond_64_bits_fails_at_once_naming_where() -> None:
    """Before: orjson's TypeError "Integer exceeds 64-bit range", retried every attempt."""
    assert encode_result({"n": 2**64 - 1, "m": -(2**63)}, LIMIT) == (
        b'{"n":18446744073709551615,"m":-9223372036854775808}'
    )
    with pytest.raises(UnstorableResult, match=r'^result\["ids"\]\[1\]: cannot store the int '):
        encode_result({"ids": [1, 2**64]}, LIMIT)
    with pytest.raises(UnstorableResult, match="over 64 bits"):
        encode_result(-(2**63) - 1, LIMIT)
