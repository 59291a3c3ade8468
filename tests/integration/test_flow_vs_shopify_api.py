"""Flow action requests judged by Shopify's own Node library (@shopify/shopify-api's
`shopify.flow.validate`), as tests/integration/test_emulator_vs_shopify_api.py does for
webhooks: what the emulator sends as Flow validates with the library, a tampered body or
another app's secret does not, and the service agrees with the library both ways."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from service.shopify.signatures import verify_webhook
from tests.integration.test_emulator_vs_shopify_api import judge, recorder
from tests.support.shopify_api import install

SHOP = "flow-judged.myshopify.com"


@pytest.fixture(scope="module")
def node() -> Path:
    return install()


def test_emulated_flow_requests_validate_with_the_library(node: Path, serve, emulator) -> None:
    target, seen = recorder()
    app = serve(target)
    shopify = emulator(app_url=app.url, shops={SHOP: "shpat_judged"})
    sent = httpx.post(
        f"{shopify.url}/_emulator/flow/actions",
        json={"shop": SHOP, "handle": "echo", "properties": {"message": "Crème brûlée"}},
    ).json()
    assert sent["attempts"][0]["status"] == 200
    delivery = seen[-1]
    assert delivery["path"] == "/flow/actions/echo"
    body = delivery["body"].decode()
    payload = json.loads(body)
    assert payload["shopify_domain"] == SHOP and payload["action_run_id"] == sent["action_run_id"]
    assert payload["handle"] == "echo" and payload["properties"] == {"message": "Crème brûlée"}
    path = delivery["path"]
    valid = judge(node).run("validateFlow", body=body, headers=delivery["headers"], path=path)
    assert valid == {"valid": True}
    tampered = body.replace("brûlée", "brulee")
    refused = judge(node).run("validateFlow", body=tampered, headers=delivery["headers"], path=path)
    assert refused["valid"] is False and refused["reason"] == "invalid_hmac"
    other = judge(node, secret="another-app-secret")
    assert (
        other.run("validateFlow", body=body, headers=delivery["headers"], path=path)["valid"]
        is False
    )
    # The service's check (service/web/flow.py) agrees with the library on both.
    signature = delivery["headers"]["x-shopify-hmac-sha256"]
    from tests.support.config import TEST_SECRET

    assert verify_webhook(delivery["body"], signature, TEST_SECRET)
    assert not verify_webhook(tampered.encode(), signature, TEST_SECRET)


def test_library_signed_flow_bodies_verify_in_the_service(node: Path) -> None:
    from tests.support.config import TEST_SECRET

    body = json.dumps({"shopify_domain": SHOP, "action_run_id": "r1", "handle": "echo",
                       "properties": {"message": "hi"}})  # fmt: skip
    signature = judge(node).run("signWebhook", body=body, apiSecret=TEST_SECRET)
    assert verify_webhook(body.encode(), signature, TEST_SECRET)
    headers = {"X-Shopify-Hmac-Sha256": signature, "Content-Type": "application/json"}
    path = "/flow/actions/echo"
    assert judge(node).run("validateFlow", body=body, headers=headers, path=path) == {"valid": True}
