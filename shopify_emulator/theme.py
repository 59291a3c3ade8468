"""The storefront's theme: the app's theme app extension, rendered and served as Shopify would.

On a real shop, Shopify renders an app block's Liquid inside the merchant's theme (with the
block's settings from the theme editor) and serves the extension's assets from its CDN. The
emulator does both from `extensions/shopjobs-theme/` of this repository, so its storefront page
runs the very markup and JavaScript a shop would, through the emulated app proxy. Liquid is
rendered with python-liquid plus the two Shopify filters the blocks use (`asset_url`, `json`);
the `{% schema %}` section is read as JSON for the settings' defaults and the block's stylesheet.
"""

from __future__ import annotations

import html
import json
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import liquid
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from shopify_emulator.catalogue import Product
from shopify_emulator.state import EmulatorState
from shopify_emulator.storefront import visitor

DEFAULT_EXTENSION_DIR = Path(__file__).resolve().parent.parent / "extensions" / "shopjobs-theme"
SCHEMA = re.compile(r"{%-?\s*schema\s*-?%}(.*?){%-?\s*endschema\s*-?%}", re.DOTALL)
ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DEMO_PRODUCTS = 3


@dataclass(frozen=True)
class Block:
    name: str
    template: liquid.BoundTemplate
    schema: dict[str, Any]

    def settings(self, given: dict[str, Any]) -> dict[str, Any]:
        """The theme editor's values: each setting's default unless the merchant set it."""
        values = {s["id"]: s.get("default") for s in self.schema.get("settings", []) if "id" in s}
        return {**values, **given}


class ThemeExtension:
    """One theme app extension folder: its blocks (Liquid) and its assets."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = directory.name
        self.env = liquid.Environment()
        self.env.filters["asset_url"] = self.asset_url
        self.env.filters["json"] = lambda value: json.dumps(value)

    def asset_url(self, name: str) -> str:
        return f"/cdn/extensions/{self.name}/assets/{name}"

    def block(self, name: str) -> Block:
        """Read on every call, so an edited block shows on the next page load."""
        source = (self.directory / "blocks" / f"{name}.liquid").read_text()
        found = SCHEMA.search(source)
        schema = json.loads(found.group(1)) if found else {}
        return Block(name, self.env.from_string(SCHEMA.sub("", source)), schema)

    def render(self, block: Block, block_id: str, settings: dict[str, Any], **context: Any) -> str:
        values = {"id": block_id, "settings": block.settings(settings), "shopify_attributes": ""}
        return block.template.render(block=values, **context)

    def asset_path(self, name: str) -> Path | None:
        if not ASSET_NAME.match(name):
            return None
        path = self.directory / "assets" / name
        return path if path.is_file() else None


def extension(state: EmulatorState) -> ThemeExtension:
    directory = state.config.theme_extension_dir
    return ThemeExtension(Path(directory) if directory else DEFAULT_EXTENSION_DIR)


async def asset(request: Request) -> Response:
    """An extension asset, as Shopify's CDN serves it (cross-origin readable)."""
    theme = extension(request.app.state.emulator)
    path = None
    if request.path_params["extension"] == theme.name:
        path = theme.asset_path(request.path_params["name"])
    if path is None:
        return HTMLResponse("<h1>404 Not Found</h1>", status_code=404)
    kind = "text/javascript" if path.suffix == ".js" else mimetypes.guess_type(path.name)[0]
    headers = {"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"}
    return FileResponse(path, media_type=kind or "application/octet-stream", headers=headers)


def _liquid_product(product: Product) -> dict[str, Any]:
    return {"id": product.id, "title": product.title, "handle": product.handle}


# The diagnostic `echo` job (ENABLE_DIAGNOSTIC_JOBS, on in `make dev`): slow, and failing.
DIAGNOSTIC_BLOCKS = (
    (
        "echo-slow",
        "A slow job",
        "echo, 3 seconds, reporting its progress",
        {
            "label": "Run a 3-second job",
            "job_type": "echo",
            "send_product": False,
            "input": '{"message": "Hello from the demo storefront", "sleep_ms": 3000}',
        },
    ),
    (
        "echo-fail",
        "A failing job",
        "echo with fail_permanently: its error is shown",
        {
            "label": "Run a failing job",
            "job_type": "echo",
            "send_product": False,
            "input": '{"message": "never", "fail_permanently": true}',
        },
    ),
)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{shop} (Shopify emulator)</title>
{stylesheets}
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1f2328; background: #f6f6f7; }}
header {{ background: #1f2328; color: #fff; padding: .9rem 2rem; display: flex;
  justify-content: space-between; align-items: baseline; flex-wrap: wrap; gap: .5rem; }}
header h1 {{ font-size: 1.15rem; margin: 0; }}
header a {{ color: #9ecbff; }}
main {{ padding: 1.2rem 2rem 2rem; max-width: 72rem; }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(20rem, 1fr));
  gap: 1rem; }}
.card {{ background: #fff; border: 1px solid #d0d7de; border-radius: .6rem;
  padding: 1rem 1.1rem; }}
.card h2 {{ font-size: 1.02rem; margin: 0 0 .2rem; }}
.card p {{ margin: 0; color: #57606a; font-size: .88rem; }}
.shopjobs__button {{ font: inherit; padding: .45rem .9rem; border-radius: .4rem;
  border: 0; background: #008060; color: #fff; }}
</style></head>
<body><header><h1>{shop}</h1>
<span>Customer: <b>{customer}</b> &middot;
<a href="/_emulator/login?customer=1001">log in as 1001</a> &middot;
<a href="/_emulator/login?customer=">log out</a></span></header>
<main><p>Each card holds the app's <b>Job button</b> block
(<code>extensions/{extension}/blocks/job_button.liquid</code>), rendered as a theme would render
it. Its buttons call the app through the app proxy <code>{proxy}</code> and poll the job.</p>
<div class="cards">{cards}</div></main></body></html>"""

CARD = '<section class="card"><h2>{title}</h2><p>{subtitle}</p>{block}</section>'


async def storefront_page(request: Request) -> HTMLResponse:
    """The demo shop's home page: product cards and diagnostic jobs, each with the app block."""
    state: EmulatorState = request.app.state.emulator
    theme = extension(state)
    block = theme.block("job_button")
    proxy = f"/apps/{state.config.proxy_subpath}"
    base = {"proxy_path": proxy}
    cards = []
    for product in list(state.catalogue.values())[:DEMO_PRODUCTS]:
        rendered = theme.render(
            block,
            f"summary-{product.id}",
            {**base, "label": "Summarise"},
            product=_liquid_product(product),
        )
        subtitle = f"{html.escape(product.vendor)} &middot; {len(product.variants)} variants"
        cards.append(
            CARD.format(title=html.escape(product.title), subtitle=subtitle, block=rendered)
        )
    for block_id, title, subtitle, settings in DIAGNOSTIC_BLOCKS:
        rendered = theme.render(block, block_id, {**base, **settings})
        cards.append(CARD.format(title=title, subtitle=html.escape(subtitle), block=rendered))
    stylesheet = block.schema.get("stylesheet")
    links = f'<link rel="stylesheet" href="{theme.asset_url(stylesheet)}">' if stylesheet else ""
    shop, customer = visitor(request, state)
    page = PAGE.format(
        shop=html.escape(shop or "no shop"),
        customer=html.escape(customer or "anonymous"),
        extension=html.escape(theme.name),
        proxy=html.escape(proxy),
        stylesheets=links,
        cards="".join(cards),
    )
    return HTMLResponse(page)
