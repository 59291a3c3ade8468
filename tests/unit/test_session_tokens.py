"""App Bridge session tokens: what service/shopify/session_tokens.py accepts and refuses.

Tokens are minted by the emulator's own signer (shopify_emulator/embedded.py, hand-written
HS256), so a token accepted here is one built independently of the verifier's library.
"""

from __future__ import annotations

import time

import jwt
import pytest

from service.shopify import session_tokens
from shopify_emulator.config import EmulatorConfig
from shopify_emulator.embedded import session_claims, sign

KEY, SHOP = "api-key", "alpine.myshopify.com"
SECRET = "shpss_0123456789abcdef0123456789abcdef"  # as long as a real one (PyJWT warns below 32 B)
CONFIG = EmulatorConfig(app_url="http://app", api_key=KEY, api_secret=SECRET)


def claims(**changes: object) -> dict[str, object]:
    values = session_claims(CONFIG, SHOP, "1001", time.time())
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def verify(token: str) -> session_tokens.SessionToken:
    return session_tokens.verify(token, api_key=KEY, secret=SECRET)


def test_a_good_token_names_its_shop_and_staff_user() -> None:
    token = sign(claims(), SECRET)
    session = verify(token)
    assert (session.shop, session.user, session.raw) == (SHOP, "1001", token)


def test_leeway_is_a_few_seconds_not_more() -> None:
    now = int(time.time())
    verify(sign(claims(exp=now - 5), SECRET))  # just expired: within the leeway
    verify(sign(claims(nbf=now + 5), SECRET))
    with pytest.raises(session_tokens.InvalidSessionToken):
        verify(sign(claims(exp=now - 11), SECRET))


@pytest.mark.parametrize(
    ("case", "token"),
    [
        ("expired", lambda: sign(claims(exp=int(time.time()) - 60), SECRET)),
        ("not yet valid", lambda: sign(claims(nbf=int(time.time()) + 60), SECRET)),
        ("wrong audience", lambda: sign(claims(aud="another-app"), SECRET)),
        ("wrong secret", lambda: sign(claims(), "not-the-secret")),
        ("alg none", lambda: jwt.encode(claims(), None, algorithm="none")),
        ("alg none, our signer", lambda: sign(claims(), SECRET, {"alg": "none"})),
        ("HS512", lambda: jwt.encode(claims(), SECRET, algorithm="HS512")),
        ("RS256 header", lambda: sign(claims(), SECRET, {"alg": "RS256", "typ": "JWT"})),
        ("dest not a shop", lambda: sign(claims(dest="https://evil.example.com",
                                                iss="https://evil.example.com/admin"), SECRET)),
        ("dest not https", lambda: sign(claims(dest=f"http://{SHOP}",
                                               iss=f"http://{SHOP}/admin"), SECRET)),
        ("iss of another shop", lambda: sign(claims(iss="https://other.myshopify.com/admin"),
                                             SECRET)),
        ("no sub", lambda: sign(claims(sub=None), SECRET)),
        ("sub with NUL", lambda: sign(claims(sub="1001\x00"), SECRET)),
        ("sub with a lone surrogate", lambda: sign(claims(sub="\ud800"), SECRET)),
        ("sub with a newline", lambda: sign(claims(sub="1001\nforged log line"), SECRET)),
        ("no exp", lambda: sign(claims(exp=None), SECRET)),
        ("garbage", lambda: "not.a.jwt"),
        ("empty", lambda: ""),
    ],
)  # fmt: skip
def test_refused(case: str, token) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(session_tokens.InvalidSessionToken):
        verify(token())


def test_no_secret_refuses_everything() -> None:
    token = sign(claims(), "")
    with pytest.raises(session_tokens.InvalidSessionToken):
        session_tokens.verify(token, api_key=KEY, secret="")
