"""The theme app extension as files: what Shopify requires of it, and how its block renders."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest

from shopify_emulator import EmulatorConfig, create_app
from shopify_emulator.theme import DEFAULT_EXTENSION_DIR, ThemeExtension

# Shopify's input setting types that an app block may use (a subset: the ones that exist).
SETTING_TYPES = {"checkbox", "number", "radio", "range", "select", "text", "textarea", "product"}


class Buttons(HTMLParser):
    """The attributes of every <button> in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "button":
            self.found.append(dict(attrs))


def buttons(markup: str) -> list[dict[str, str | None]]:
    parser = Buttons()
    parser.feed(markup)
    return parser.found


def test_the_extension_is_a_theme_extension_with_a_valid_block() -> None:
    config = tomllib.loads((DEFAULT_EXTENSION_DIR / "shopify.extension.toml").read_text())
    assert config["type"] == "theme" and config["name"] == "shopjobs-theme"
    block = ThemeExtension(DEFAULT_EXTENSION_DIR).block("job_button")
    assert block.schema["target"] == "section"
    assert (DEFAULT_EXTENSION_DIR / "assets" / block.schema["stylesheet"]).is_file()
    settings = block.schema["settings"]
    assert {s["type"] for s in settings} <= SETTING_TYPES
    assert len({s["id"] for s in settings}) == len(settings)
    assert block.settings({}) | {"product": None} == {
        "label": "Summarise this product",
        "job_type": "product_summary",
        "send_product": True,
        "product": None,
        "input": None,
        "proxy_path": "/apps/jobs",
    }


def test_the_block_renders_its_settings_as_escaped_data_attributes() -> None:
    theme = ThemeExtension(DEFAULT_EXTENSION_DIR)
    block = theme.block("job_button")
    on_product = theme.render(block, "b1", {}, product={"id": 42})
    [button] = buttons(on_product)
    assert button["data-shopjobs-type"] == "product_summary"
    assert button["data-shopjobs-product-id"] == "gid://shopify/Product/42"
    assert button["data-shopjobs-input"] == "{}"
    assert button["data-shopjobs-base-path"] == "/apps/jobs"
    assert 'import { bindBlock } from "/cdn/extensions/shopjobs-theme/assets/shopjobs.js"' in (
        on_product
    )
    assert 'document.getElementById("shopjobs-b1")' in on_product

    hostile = {
        "label": "<img src=x onerror=alert(1)>",
        "job_type": 'echo" onclick="alert(1)',
        "send_product": False,
        "input": '{"message": "<b>hi</b>"}',
    }
    rendered = theme.render(block, "b2", hostile, product={"id": 42})
    [button] = buttons(rendered)
    assert "<img" not in rendered
    assert button["data-shopjobs-type"] == 'echo" onclick="alert(1)'
    assert "onclick" not in button
    assert button["data-shopjobs-input"] == '{"message": "<b>hi</b>"}'
    assert "data-shopjobs-product-id" not in button  # "Send the product" is off


@pytest.fixture
async def storefront() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(EmulatorConfig(app_url="http://app.test", shops={"s.myshopify.com": "t"}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            yield client


async def test_the_storefront_serves_the_block_and_its_assets(
    storefront: httpx.AsyncClient,
) -> None:
    page = (await storefront.get("/")).text
    found = buttons(page)
    assert [b["data-shopjobs-type"] for b in found].count("product_summary") == 3
    assert [b["data-shopjobs-type"] for b in found].count("echo") == 2  # slow, failing
    assert 'href="/cdn/extensions/shopjobs-theme/assets/shopjobs.css"' in page
    script = await storefront.get("/cdn/extensions/shopjobs-theme/assets/shopjobs.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "export async function startJob" in script.text
    for missing in (
        "/cdn/extensions/shopjobs-theme/assets/nope.js",
        "/cdn/extensions/shopjobs-theme/assets/..%2Fblocks%2Fjob_button.liquid",
        "/cdn/extensions/other/assets/shopjobs.js",
    ):
        assert (await storefront.get(missing)).status_code == 404, missing
