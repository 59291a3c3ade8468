"""What a run leaves in Postgres: its result as JSON, its error as storable text.

Handlers return what app developers naturally return: Shopify prices are `Decimal`s, times
are `datetime`s, ids `UUID`s, and models pydantic or dataclasses. Those are encoded here,
before anything is written, into the JSON the `result` column holds. Anything else (a set, a
socket, a float that is not a number) cannot be stored faithfully, and a result larger than
JOB_RESULT_MAX_BYTES would bloat the table: either fails the job at once, with a message that
names the type and where it sits, instead of leaving a write that can never succeed retried
for ever. Error texts come from anywhere (a NUL byte in a third party's message, a lone
surrogate); Postgres text refuses both, so they are replaced, and long texts are cut.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel

from jobs.types import NonRetryableError

MAX_ERROR_CHARS = 2000
ERROR_CUT_MARK = "… (cut)"
REPLACEMENT = "\ufffd"
# The integers JSON encoding takes (orjson: signed or unsigned 64-bit); a bigger one, encoded,
# raised a TypeError that was retried as if the next attempt could return something else.
MIN_JSON_INT = -(2**63)
MAX_JSON_INT = 2**64 - 1


class UnstorableResult(NonRetryableError):
    """A handler's result that cannot be recorded; its message says what and where."""


def encode_result(result: Any, max_bytes: int) -> bytes:
    """`result` as JSON bytes for the `result` column, or UnstorableResult."""
    encoded = orjson.dumps(_plain(result, "result"))
    if len(encoded) > max_bytes:
        raise UnstorableResult(
            f"result is {len(encoded)} bytes encoded, over the {max_bytes}-byte limit "
            "(JOB_RESULT_MAX_BYTES)"
        )
    return encoded


def _plain(value: Any, where: str) -> Any:
    """`value` as JSON-native types only (dict with str keys, list, str, int, float, bool,
    None); `where` is the path shown in errors, e.g. `result["items"][3]`."""
    if value is None or isinstance(value, bool | str):
        return storable_text(value) if isinstance(value, str) else value
    if isinstance(value, int):
        if not MIN_JSON_INT <= value <= MAX_JSON_INT:  # orjson's range: it refuses the rest
            raise UnstorableResult(f"{where}: cannot store the int {value} (over 64 bits)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnstorableResult(f"{where}: cannot store the float {value!r} (JSON has none)")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise UnstorableResult(f"{where}: cannot store the Decimal {value}")
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return _plain(value.value, where)
    if isinstance(value, BaseModel):
        return _plain(value.model_dump(mode="python"), where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, where)
    if isinstance(value, Mapping):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnstorableResult(
                    f"{where}: cannot store a {type(key).__name__} key ({key!r}); keys are text"
                )
            plain[storable_text(key)] = _plain(item, f"{where}[{orjson.dumps(key).decode()}]")
        return plain
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise UnstorableResult(f"{where}: cannot store a {type(value).__name__}")


def storable_text(text: str) -> str:
    """`text` as Postgres can store it: NUL and unpaired surrogates replaced."""
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (from a bad decode): not UTF-8 at all
        text = "".join(REPLACEMENT if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def error_text(error: BaseException) -> str:
    """An exception's message, or its class name; never raises, though a handler's exception
    may define a `__str__` that does (raised while its failure was written, it left the job
    `processing` under a dead run's lease, to run again until "Abandoned")."""
    try:
        text = str(error)
    except Exception:
        return f"{error.__class__.__name__} (its message could not be read)"
    return text or error.__class__.__name__


def storable_error(text: str, max_chars: int = MAX_ERROR_CHARS) -> str:
    """An error message fit for the `error_message` column: storable, at most `max_chars`."""
    text = storable_text(text)
    if len(text) > max_chars:
        text = text[: max_chars - len(ERROR_CUT_MARK)] + ERROR_CUT_MARK
    return text
