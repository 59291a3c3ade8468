"""The shipped extension tomls of Shopify's entry points: generated from the job types (and up
to date), parseable TOML, and within the rules Shopify's docs give for each extension type."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from jobs.builtin import echo
from jobs.types import BulkAction, FlowAction
from tools import shopify_extensions

EXTENSIONS = Path(__file__).resolve().parents[2] / "extensions"
HANDLE = re.compile(r"^[A-Za-z0-9-]{1,30}$")
# Flow's field types (the Flow action and trigger references) that the generator may write.
FLOW_FIELD_TYPES = {"single_line_text_field", "multi_line_text_field", "number_integer",
                    "number_decimal", "boolean"}  # fmt: skip


def test_shipped_tomls_are_what_the_job_types_generate() -> None:
    assert shopify_extensions.main(["--check"]) == 0


def _load(handle: str) -> dict:
    return tomllib.loads((EXTENSIONS / handle / "shopify.extension.toml").read_text())


def test_echo_is_a_flow_action_with_message_and_sleep_ms() -> None:
    [extension] = _load("echo")["extensions"]
    assert extension["type"] == "flow_action" and extension["handle"] == "echo"
    assert extension["runtime_url"] == "https://jobs.example.com/flow/actions/echo"
    fields = _load("echo")["settings"]["fields"]
    assert [(f["key"], f["type"], f["required"]) for f in fields] == [
        ("message", "multi_line_text_field", True),
        ("sleep_ms", "number_integer", False),
    ]


def test_the_trigger_and_the_admin_link_follow_shopifys_rules() -> None:
    for handle in ("echo", "echo-finished", "shopjobs-bulk-action"):
        config = _load(handle)
        [extension] = config["extensions"]
        assert HANDLE.match(extension["handle"]) and extension["handle"] == handle
        assert extension["name"]
        for field in config.get("settings", {}).get("fields", []):
            assert field["type"] in FLOW_FIELD_TYPES and field["key"]
    trigger = _load("echo-finished")
    assert trigger["extensions"][0]["type"] == "flow_trigger"
    assert [f["key"] for f in trigger["settings"]["fields"]] == [
        "Job ID", "Job type", "Status", "message"]  # fmt: skip
    link = _load("shopjobs-bulk-action")["extensions"][0]
    assert link["type"] == "admin_link"
    assert {t["target"]: t["url"] for t in link["targeting"]} == {
        "admin.product-index.selection-link": "app://app/bulk/products",
        "admin.order-index.selection-link": "app://app/bulk/orders",
    }


def test_a_flow_action_field_flow_cannot_show_is_refused() -> None:
    with pytest.raises(ValueError, match="letters, digits and hyphens"):
        FlowAction(handle="bad handle")  # spaces: refused at import
    bad = shopify_extensions.action_fields
    from pydantic import BaseModel

    class Listy(BaseModel):
        tags: list[str]

    with pytest.raises(ValueError, match="tags"):
        bad(Listy)
    with pytest.raises(ValueError):
        BulkAction(field="id", resources=("customer",))
    assert echo.JOB_TYPE.flow_action is not None
