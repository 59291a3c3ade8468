"""Inputs across releases (docs/upgrading.md#job-inputs-across-releases): what is stored is what
the caller gave, and a stored input is read leniently (unknown keys dropped, `upgrade_input`
first) while a new request stays strict."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.builtin.echo import JOB_TYPE as ECHO
from jobs.builtin.product_summary import job_type as product_summary
from jobs.types import JobContext, JobType
from service.intake import InvalidJobInput, validate_input


class Renamed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    limit: int = Field(default=10, le=100)


class Narrow(Renamed):
    limit: int = Field(default=5, le=5)


async def _handler(ctx: JobContext, data: BaseModel) -> None:
    return None


def _rename(stored: dict[str, Any]) -> dict[str, Any]:
    if "name" in stored:
        stored["title"] = stored.pop("name")
    return stored


RENAMED = JobType(name="renamed", input_model=Renamed, handler=_handler, upgrade_input=_rename)


def test_only_the_fields_the_caller_gave_are_stored() -> None:
    assert validate_input(ECHO, {"message": "hi"}) == {"message": "hi"}
    assert validate_input(ECHO, {"message": "hi", "sleep_ms": 0}) == {
        "message": "hi",
        "sleep_ms": 0,
    }


def test_defaults_are_filled_when_the_worker_reads_the_row() -> None:
    data = ECHO.parse_stored_input(validate_input(ECHO, {"message": "hi"}))
    assert data.model_dump() == {
        "message": "hi", "sleep_ms": 0, "fail_times": 0, "fail_permanently": False, "children": 0,
    }  # fmt: skip


def test_a_narrower_models_own_default_is_stored() -> None:
    """The storefront's model allows a page of 5 at most: the worker, whose model would fill
    10, must run with the 5 the narrower model chose."""
    job_type = JobType(
        name="narrow", input_model=Renamed, handler=_handler, proxy_input_model=Narrow
    )
    stored = validate_input(job_type, {"title": "t"}, Narrow)
    assert stored == {"title": "t", "limit": 5}
    # The shipped storefront model's default equals the worker's: nothing is added.
    summary = product_summary(show_inventory=False)
    gid = "gid://shopify/Product/1"
    assert validate_input(summary, {"product_id": gid}, summary.proxy_input_model) == {
        "product_id": gid
    }


def test_new_requests_stay_strict() -> None:
    with pytest.raises(InvalidJobInput, match="record_effect"):
        validate_input(ECHO, {"message": "hi", "record_effect": None})


def test_a_stored_input_ignores_fields_the_model_no_longer_has() -> None:
    stored = {"message": "hi", "sleep_ms": 0, "record_effect": None}
    assert ECHO.parse_stored_input(stored).model_dump()["message"] == "hi"
    with pytest.raises(ValidationError):  # what the worker did before: the job failed
        ECHO.input_model.model_validate(stored)


def test_a_stored_input_still_has_to_fit_the_model() -> None:
    with pytest.raises(ValidationError):
        ECHO.parse_stored_input({"message": "hi", "sleep_ms": -1})
    with pytest.raises(ValidationError):
        ECHO.parse_stored_input({"sleep_ms": 1})


def test_upgrade_input_renames_an_old_field_and_leaves_a_current_input_alone() -> None:
    assert RENAMED.parse_stored_input({"name": "old", "limit": 3}).model_dump() == {
        "title": "old", "limit": 3,
    }  # fmt: skip
    assert RENAMED.parse_stored_input({"title": "new"}).model_dump() == {
        "title": "new",
        "limit": 10,
    }
