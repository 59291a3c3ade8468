"""service/intake.py's validate_input, the one input check of the proxy, the merchant API,
webhooks and JobsClient, and how the web turns its refusal into a 400's details."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import BaseModel

from jobs.types import JobType
from service.intake import InvalidJobInput, validate_input
from service.web.parsing import MAX_ERROR_DETAILS, problem_details


class Thing(BaseModel):
    name: str
    count: int = 1
    when: date | None = None


async def _handler(ctx: Any, data: Any) -> None: ...


THING = JobType(name="thing", input_model=Thing, handler=_handler)


def test_what_is_stored_is_the_models_json_dump_of_what_the_caller_gave() -> None:
    """No default is stored (`count`): the worker's model fills it (docs/upgrading.md)."""
    data = validate_input(THING, {"name": "a", "when": "2025-01-02"})
    assert data == {"name": "a", "when": "2025-01-02"}


def _problems(raw: Any) -> list[tuple[tuple[str, ...], str | None]]:
    with pytest.raises(InvalidJobInput) as caught:
        validate_input(THING, raw)
    return [(p.path, p.type) for p in caught.value.problems]


def test_each_refusal_names_its_field() -> None:
    assert _problems({"count": "x"}) == [(("input", "name"), "missing"),
                                         (("input", "count"), "int_parsing")]  # fmt: skip
    assert _problems({"name": "a\x00"}) == [(("input",), None)]
    assert _problems({"name": "a", "count": 2**70}) == [(("input",), "int_too_big")]


def test_the_web_clips_and_bounds_the_details() -> None:
    many = {f"k{i}": "x" for i in range(50)}

    class Strict(BaseModel, extra="forbid"):
        pass

    strict = JobType(name="strict", input_model=Strict, handler=_handler)
    with pytest.raises(InvalidJobInput) as caught:
        validate_input(strict, {"x" * 500: 1, **many})
    details = problem_details(caught.value.problems)
    assert len(details) == MAX_ERROR_DETAILS
    assert details[0]["field"] == "input." + "x" * 63 + "…"
    assert details[0]["type"] == "extra_forbidden"
