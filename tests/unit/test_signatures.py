"""App-proxy signatures: Shopify's published check values and every way a query is refused."""

from __future__ import annotations

import pytest

from service.shopify.proxy_url import signed_query
from service.shopify.signatures import (
    PROXY_MAX_SKEW_SECONDS,
    ProxySignatureError,
    app_proxy_signature,
    verify_app_proxy,
)

# Shopify's documented example (docs/app-proxy.md, "The signature").
SECRET = "hush"
STAMP = 1317327555
PUBLISHED = [
    ("extra", "1"),
    ("extra", "2"),
    ("shop", "shop-name.myshopify.com"),
    ("path_prefix", "/apps/awesome_reviews"),
    ("timestamp", str(STAMP)),
]
LOGGED_IN = "4c68c8624d737112c91818c11017d24d334b524cb5c2b8ba08daa056f7395ddb"
ANONYMOUS = "e072b6d7e6622d85912a5214b860d3100dc1e73d9bc29f43796ac8c9ff8093cb"


def test_published_value_for_a_logged_in_customer() -> None:
    pairs = [*PUBLISHED, ("logged_in_customer_id", "1")]
    assert app_proxy_signature(pairs, SECRET) == LOGGED_IN


def test_published_value_for_an_anonymous_visitor_keeps_the_blank_value() -> None:
    pairs = [*PUBLISHED, ("logged_in_customer_id", "")]
    assert app_proxy_signature(pairs, SECRET) == ANONYMOUS


def test_order_of_parameters_does_not_matter_but_order_of_repeated_values_does() -> None:
    pairs = [*PUBLISHED, ("logged_in_customer_id", "1")]
    assert app_proxy_signature(list(reversed(pairs)), SECRET) != LOGGED_IN  # extra=2,1
    swapped = [pairs[1], pairs[0], *pairs[2:]]
    assert app_proxy_signature(swapped, SECRET) != LOGGED_IN
    shuffled = [pairs[5], pairs[2], pairs[0], pairs[4], pairs[1], pairs[3]]
    assert app_proxy_signature(shuffled, SECRET) == LOGGED_IN


def test_the_signature_parameter_itself_is_not_signed() -> None:
    pairs = [*PUBLISHED, ("logged_in_customer_id", "1"), ("signature", "whatever")]
    assert app_proxy_signature(pairs, SECRET) == LOGGED_IN


@pytest.mark.parametrize(
    ("customer", "signature"), [("1", LOGGED_IN), ("", ANONYMOUS), ("1", LOGGED_IN.upper())]
)
def test_verify_accepts_the_published_values(customer: str, signature: str) -> None:
    pairs = [*PUBLISHED, ("logged_in_customer_id", customer), ("signature", signature)]
    assert verify_app_proxy(pairs, SECRET, now=STAMP + 10) == "shop-name.myshopify.com"


def _signed(now: int, **overrides: str) -> list[tuple[str, str]]:
    return signed_query(
        [("jobId", "x")], shop="shop-name.myshopify.com", secret=SECRET, timestamp=now, **overrides
    )


def _refused(pairs: list[tuple[str, str]], now: float = STAMP) -> str:
    with pytest.raises(ProxySignatureError) as caught:
        verify_app_proxy(pairs, SECRET, now=now)
    return str(caught.value)


def test_wrong_secret_is_refused() -> None:
    pairs = signed_query([], shop="shop-name.myshopify.com", secret="other", timestamp=STAMP)
    assert _refused(pairs) == "Invalid signature"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("jobId", "y"),
        ("shop", "evil.myshopify.com"),
        ("logged_in_customer_id", "2"),
        ("path_prefix", "/apps/other"),
        ("timestamp", str(STAMP + 1)),
    ],
)
def test_tampered_parameters_are_refused(key: str, value: str) -> None:
    pairs = [(k, value if k == key else v) for k, v in _signed(STAMP)]
    assert _refused(pairs) == "Invalid signature"


def test_an_added_parameter_is_refused() -> None:
    assert _refused([("admin", "1"), *_signed(STAMP)]) == "Invalid signature"


def test_a_dropped_parameter_is_refused() -> None:
    pairs = [(k, v) for k, v in _signed(STAMP) if k != "path_prefix"]
    assert _refused(pairs) == "Invalid signature"


@pytest.mark.parametrize("key", ["shop", "timestamp", "signature"])
def test_a_repeated_shop_timestamp_or_signature_is_refused(key: str) -> None:
    pairs = _signed(STAMP)
    value = dict(pairs)[key]
    assert _refused([*pairs, (key, value)]) == f"Repeated parameter: {key}"


@pytest.mark.parametrize("order", ["theirs-first", "ours-first"])
def test_a_signed_but_repeated_customer_id_is_refused(order: str) -> None:
    """Signed as "7," (or ",7") but read as one value: refused, not guessed at."""
    extra = [("logged_in_customer_id", "7")]
    pairs = signed_query(extra, shop="s.myshopify.com", secret=SECRET, timestamp=STAMP)
    if order == "ours-first":
        pairs = [p for p in pairs if p != extra[0]]
        pairs.insert(len(pairs) - 1, extra[0])
        pairs[-1] = ("signature", app_proxy_signature(pairs[:-1], SECRET))
    assert _refused(pairs) == "Repeated parameter: logged_in_customer_id"


def test_a_repeated_ordinary_parameter_is_signed_joined_with_a_comma() -> None:
    pairs = signed_query(
        [("tag", "a"), ("tag", "b")], shop="s.myshopify.com", secret=SECRET, timestamp=STAMP
    )
    assert verify_app_proxy(pairs, SECRET, now=STAMP) == "s.myshopify.com"
    joined = [("tag", "a,b"), *[(k, v) for k, v in pairs if k != "tag"]]
    assert verify_app_proxy(joined, SECRET, now=STAMP) == "s.myshopify.com"


def test_missing_signature_is_refused() -> None:
    pairs = [(k, v) for k, v in _signed(STAMP) if k != "signature"]
    assert _refused(pairs) == "Missing signature"
    assert _refused([*pairs, ("signature", "")]) == "Missing signature"


def test_missing_timestamp_is_refused() -> None:
    pairs = [(k, v) for k, v in _signed(STAMP) if k != "timestamp"]
    pairs = [*pairs[:-1], ("signature", app_proxy_signature(pairs, SECRET))]
    assert _refused(pairs) == "Missing timestamp"


@pytest.mark.parametrize(
    "stamp", ["abc", "1317327555.0", " 1317327555", "1_317_327_555", "-5", "١٣١٧", "9" * 5000]
)
def test_non_integer_timestamp_is_refused_even_when_signed(stamp: str) -> None:
    pairs = [
        ("shop", "shop-name.myshopify.com"),
        ("logged_in_customer_id", ""),
        ("timestamp", stamp),
    ]
    pairs.append(("signature", app_proxy_signature(pairs, SECRET)))
    assert _refused(pairs) == "Invalid timestamp"


@pytest.mark.parametrize("skew", [-PROXY_MAX_SKEW_SECONDS, 0, PROXY_MAX_SKEW_SECONDS])
def test_timestamps_within_the_window_are_accepted(skew: int) -> None:
    assert verify_app_proxy(_signed(STAMP + skew), SECRET, now=STAMP) == "shop-name.myshopify.com"


@pytest.mark.parametrize("skew", [-PROXY_MAX_SKEW_SECONDS - 1, PROXY_MAX_SKEW_SECONDS + 1, -86400])
def test_stale_or_future_timestamps_are_refused(skew: int) -> None:
    assert _refused(_signed(STAMP + skew), now=STAMP) == "Stale timestamp"


def test_missing_shop_is_refused() -> None:
    pairs = [("logged_in_customer_id", ""), ("timestamp", str(STAMP))]
    pairs.append(("signature", app_proxy_signature(pairs, SECRET)))
    assert _refused(pairs) == "Missing shop"


def test_a_key_containing_an_equals_sign_is_refused() -> None:
    """`a=b` -> `c` and `a` -> `b=c` sign one message ("a=b=c"): a query Shopify signed could
    be read back as another, so a key with "=" is refused, signed or not."""
    theirs = signed_query([("a=b", "c")], shop="s.myshopify.com", secret=SECRET, timestamp=STAMP)
    ours = [("a", "b=c") if k == "a=b" else (k, v) for k, v in theirs]
    assert app_proxy_signature(theirs[:-1], SECRET) == app_proxy_signature(ours[:-1], SECRET)
    assert _refused(theirs) == "Parameter name contains '='"
    assert verify_app_proxy(ours, SECRET, now=STAMP) == "s.myshopify.com"  # values may hold "="
