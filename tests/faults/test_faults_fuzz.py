"""Fault suite: generated requests against the app-proxy endpoints (issue 8).

Hypothesis builds each request from parts (method, path, identity parameters, how it is signed,
extra and repeated parameters, headers, body) and sends it to the app in-process, lifespan
running, against the real Postgres and Redis. Every answer is checked for what must hold
whatever was sent:

- never a 5xx; every error is JSON `{"error": str}`;
- a request we broke (signature, timestamp) is never let in;
- rows and queue entries: a 2xx from POST /proxy/process is exactly one new row of the signed
  shop and one queue entry (or the same job again, for a repeated Idempotency-Key); anything
  else writes no row and queues nothing;
- a 2xx from GET /proxy/status shows only a job of the signed shop, and of the signed customer
  unless it was created anonymously.

1,000 requests under `make test`, 10,000 under `make faults` (tests/support/faults.py).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import store
from service.shopify.signatures import UNIQUE_PROXY_PARAMS, app_proxy_signature
from tests.support.config import TEST_SECRET
from tests.support.faults import record, sized
from tests.support.queue_entries import queue_entries, queued_score

SHOP_A = "fuzz-a.myshopify.com"
SHOP_B = "fuzz-b.myshopify.com"
GONE = "fuzz-gone.myshopify.com"  # uninstalled
UNKNOWN = "fuzz-unknown.myshopify.com"
INSTALLED = (SHOP_A, SHOP_B)
EXAMPLES = sized(1_000, 10_000)
FRESH, STALE = 85, 95  # seconds of skew surely inside / outside the 90 s window
RESERVED = {"shop", "timestamp", "signature", "logged_in_customer_id", "path_prefix"}

ODD_TEXT = [
    "",
    "\u202eevil",
    "\ufeffbom",
    "\U0010ffff",
    "𝕳𝖊𝖑𝖑𝖔",
    "💥" * 20,
    "a\u0000b",
    "\u0085\u2028\u2029",
    "Ω" * 3000,
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "%00%ff",
    "../../etc/passwd",
]
texts = st.text(max_size=40) | st.sampled_from(ODD_TEXT)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
echo_inputs = st.fixed_dictionaries(
    {"message": texts},
    optional={
        "sleep_ms": st.integers(-5, 5) | st.integers(-(2**70), 2**70) | json_values,
        "fail_times": st.integers(0, 3) | json_values,
        "fail_permanently": st.booleans() | json_values,
        "surplus": json_values,
    },
)
job_types = (
    st.sampled_from(
        ["echo"] * 6
        + [
            "product_summary",
            "customers_redact",
            "shop_redact",
            "customers_data_request",
            "nope",
            "",
        ]
    )
    | json_values
)


def encode(value: object, draw_style: int) -> bytes:
    """JSON text in one of several spellings (ASCII escapes, raw UTF-8, or lone surrogates)."""
    if draw_style == 0:
        return json.dumps(value, ensure_ascii=True).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 11))
    style = draw(st.integers(0, 1))
    if kind <= 3:  # a well-formed echo request, often valid
        return encode({"type": "echo", "input": draw(echo_inputs)}, style)
    if kind == 4:
        return encode({"type": draw(job_types), "input": draw(json_values)}, style)
    if kind == 5:
        return encode(draw(json_values), style)
    if kind == 6:
        return draw(st.binary(max_size=300))
    if kind == 7:  # around and far over the 64 KiB limit
        size = draw(st.sampled_from([65_536 - 40, 65_536 - 39, 65_536, 70_000, 300_000]))
        return b'{"type":"echo","input":{"message":"' + b"a" * size + b'"}}'
    if kind == 8:  # nested deeper than anyone needs
        depth = draw(st.integers(50, 3_000))
        nested = b"[" * depth + b"]" * depth
        return b'{"type":"echo","input":{"message":"x","deep":' + nested + b"}}"
    if kind == 9:
        return draw(
            st.sampled_from(
                [
                    b"",
                    b"null",
                    b'{"type":"echo","type":"customers_redact","input":{"message":"x"}}',
                    b'\xef\xbb\xbf{"type":"echo","input":{"message":"bom"}}',
                    b'{"type":"echo","input":{"message":"\\ud800"}}',
                    b'{"type":"echo","input":{"message":"x","sleep_ms":1e400}}',
                    b'{"type":"echo","input":{"message":"x"}}garbage',
                    b'{"type":"echo","input":{"message":"\x00"}}',
                    b'{"type":"echo","input":{"message":"\xff\xfe"}}',
                    b"type=echo&input=x",
                ]
            )
        )
    return encode({"type": "echo", "input": {"message": draw(texts)}}, style)


@dataclass(frozen=True)
class Fuzzed:
    method: str
    path: str
    shop: str
    customer: str
    prefix: str
    timestamp: int | str  # seconds of skew from now, or the raw text to send
    signing: str
    extra: tuple[tuple[str, str], ...]
    repeated: tuple[str, ...]
    job_ref: str
    mangle: str
    order: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    @property
    def fresh(self) -> bool:
        return isinstance(self.timestamp, int) and abs(self.timestamp) <= FRESH

    @property
    def broken(self) -> bool:
        """Surely refused 401 by the signature check (for a route and method that exist)."""
        stale = isinstance(self.timestamp, int) and abs(self.timestamp) >= STALE
        bad_stamp = isinstance(self.timestamp, str)
        unsigned = self.signing in ("missing", "empty", "wrong", "truncated", "other-secret")
        repeats = any(k in UNIQUE_PROXY_PARAMS for k in self.repeated) or any(
            k in UNIQUE_PROXY_PARAMS for k, _ in self.extra
        )
        return stale or bad_stamp or unsigned or repeats or self.signing == "repeated"

    @property
    def clean(self) -> bool:
        """Signed as Shopify signs, by an installed shop, nothing odd in the query."""
        return (
            self.signing in ("valid", "upper")
            and self.fresh
            and not self.repeated
            and not self.mangle
            and self.shop in INSTALLED
            and self.customer.isprintable()
            and len(self.customer) <= 255
            and all(k not in RESERVED and k != "jobId" for k, _ in self.extra)
        )


timestamps = (
    st.integers(-FRESH, FRESH)
    | st.integers(-400, 400)
    | st.integers(-(10**9), 10**9)
    | st.sampled_from(["", "abc", "1e9", " 12", "１２３", "-5", "+5", "0" * 13, "9" * 40])
)
extra_params = st.lists(
    st.tuples(
        st.sampled_from(["jobId", "a", "signature", "shop", "logged_in_customer_id", "x y", "ü"])
        | texts,
        texts,
    ),
    max_size=3,
)
header_values = st.sampled_from(
    [
        b"application/json",
        b"application/json; charset=utf-8",
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=zz",
        b"",
        b"\xff\xfe",
    ]
)
idempotency = st.sampled_from([None, "k1", "k2", "k3", " k1 ", "", "é", "a" * 256, "\x7f"]) | texts


ASPECTS = (
    "method",
    "path",
    "shop",
    "customer",
    "prefix",
    "timestamp",
    "signing",
    "extra",
    "repeated",
    "job_ref",
    "mangle",
    "content-type",
    "idempotency",
    "content-length",
    "body",
)
clean_text = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"]), max_size=40
)  # no NUL, no control characters, no lone surrogates


@st.composite
def requests(draw: st.DrawFn) -> Fuzzed:
    """A request as Shopify would forward it, with a few of its aspects (0 to 3) made wild."""
    wild = draw(st.sets(st.sampled_from(ASPECTS), max_size=3))

    def pick(aspect: str, clean: st.SearchStrategy, odd: st.SearchStrategy) -> object:
        return draw(odd if aspect in wild else clean)

    path = pick(
        "path",
        st.sampled_from(["/proxy/process", "/proxy/status"]),
        st.sampled_from(
            [
                "/proxy",
                "/proxy/",
                "/proxy/process/",
                "/proxy/status/x",
                "/proxy/PROCESS",
                "/proxy/%00",
                "/proxy/st%61tus",
                "/proxy//status",
                "/apps/jobs/process",
            ]
        ),
    )
    method = pick(
        "method",
        st.just("POST" if path == "/proxy/process" else "GET"),
        st.sampled_from(
            ["POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND"]
        ),
    )
    headers: list[tuple[bytes, bytes]] = []
    content_type = pick(
        "content-type", st.sampled_from([b"application/json", None]), header_values | st.none()
    )
    if content_type is not None:
        headers.append((b"content-type", content_type))
    key = pick("idempotency", st.sampled_from([None, None, "k1", "k2", "k3"]), idempotency)
    if key is not None:
        repeats = 2 if "idempotency" in wild and draw(st.booleans()) else 1
        for _ in range(repeats):
            headers.append((b"idempotency-key", key.encode("utf-8", errors="surrogatepass")))
    if "content-length" in wild:
        length = draw(st.sampled_from([b"abc", b"-1", b"1", b"99999999999", b"9" * 30, b"0x10"]))
        headers.append((b"content-length", length))
    clean_body = st.builds(
        lambda message, sleep: encode(
            {"type": "echo", "input": {"message": message, "sleep_ms": sleep}}, 1
        ),
        clean_text,
        st.integers(0, 1000),
    )
    return Fuzzed(
        method=method,
        path=path,
        shop=pick(
            "shop",
            st.sampled_from([SHOP_A, SHOP_A, SHOP_B]),
            st.sampled_from([GONE, UNKNOWN, "EVIL.com", "", SHOP_A.upper()]) | texts,
        ),
        customer=pick("customer", st.sampled_from(["", "", "7", "8"]), texts),
        prefix=pick("prefix", st.just("/apps/jobs"), texts),
        timestamp=pick("timestamp", st.integers(-FRESH, FRESH), timestamps),
        signing=pick(
            "signing",
            st.sampled_from(["valid", "valid", "upper"]),
            st.sampled_from(["missing", "empty", "wrong", "truncated", "other-secret", "repeated"]),
        ),
        extra=tuple(pick("extra", st.just([]), extra_params)),
        repeated=tuple(
            pick(
                "repeated",
                st.just([]),
                st.lists(
                    st.sampled_from(sorted(RESERVED - {"signature"})),
                    min_size=1,
                    max_size=2,
                    unique=True,
                ),
            )
        ),
        job_ref=pick(
            "job_ref",
            st.sampled_from(["A", "A7", "A8", "B", "random"]),
            st.sampled_from(["", "nope", "{%s}", "%s-", "%S", "urn:uuid:%s", "%s" * 3]) | texts,
        ),
        mangle=pick(
            "mangle", st.just(""), st.sampled_from(["&", "%zz", "%ff%fe", "&&=&", ";a=b", "#f"])
        ),
        order=draw(st.integers(0, 2**16)),
        headers=tuple(headers),
        body=pick("body", clean_body, bodies()),
    )


@dataclass
class Target:
    """The fixed world the requests are aimed at."""

    shops: dict[str, store.Shop]
    jobs: dict[str, store.Job]  # "A" (anonymous), "A7", "A8" (customers), "B"


def job_id_for(ref: str, target: Target) -> str:
    if ref in target.jobs:
        return str(target.jobs[ref].id)
    if ref == "random":
        return str(uuid.uuid4())
    if "%s" in ref or "%S" in ref:
        own = str(target.jobs["A"].id)
        return ref.replace("%s", own).replace("%S", own.upper())
    return ref


def query_for(request: Fuzzed, target: Target) -> str:
    if isinstance(request.timestamp, int):
        stamp = str(int(time.time()) + request.timestamp)
    else:
        stamp = request.timestamp
    pairs = list(request.extra)
    if request.path.startswith("/proxy/status") or request.job_ref in target.jobs:
        pairs.append(("jobId", job_id_for(request.job_ref, target)))
    pairs += [
        ("shop", request.shop),
        ("logged_in_customer_id", request.customer),
        ("path_prefix", request.prefix),
        ("timestamp", stamp),
    ]
    for name in request.repeated:
        pairs.append((name, dict(pairs)[name] + "0"))
    random.Random(request.order).shuffle(pairs)
    signature = app_proxy_signature(pairs, TEST_SECRET)
    signed = {
        "valid": [signature],
        "upper": [signature.upper()],
        "missing": [],
        "empty": [""],
        "wrong": ["0" * 64],
        "truncated": [signature[:-1]],
        "other-secret": [app_proxy_signature(pairs, TEST_SECRET + "x")],
        "repeated": [signature, signature],
    }[request.signing]
    pairs += [("signature", value) for value in signed]
    return urlencode(pairs) + request.mangle


async def counts(database: Database, redis: ArqRedis) -> tuple[int, int, int, int]:
    row = await database.fetch_one(
        "SELECT (SELECT count(*) FROM jobs) AS jobs, (SELECT count(*) FROM shops) AS shops, "
        "(SELECT count(*) FROM webhook_events) AS events"
    )
    assert row is not None
    m = row._mapping
    return m["jobs"], m["shops"], m["events"], len(await queue_entries(redis))


@pytest.fixture
async def target(app_client: httpx.AsyncClient, database: Database) -> Target:
    shops = {
        domain: await store.upsert_shop(database, domain, f"shpat_{i}", "")
        for i, domain in enumerate((SHOP_A, SHOP_B, GONE))
    }
    await store.mark_shop_uninstalled(database, GONE)
    jobs = {}
    for ref, shop, customer in (("A", SHOP_A, None), ("A7", SHOP_A, "7"), ("A8", SHOP_A, "8")):
        jobs[ref], _ = await store.create_job(
            database,
            shop_id=shops[shop].id,
            job_type="echo",
            job_input={"message": ref},
            customer_id=customer,
        )
    jobs["B"], _ = await store.create_job(
        database, shop_id=shops[SHOP_B].id, job_type="echo", job_input={"message": "B"}
    )
    return Target(shops=shops, jobs=jobs)


@pytest.fixture
def tally() -> Iterator[Counter[str]]:
    """What the fuzz test sent and saw, checked once all its examples have run.

    Hypothesis sets a function-scoped fixture up once for all examples of a test, so this
    teardown is the end of the fuzzing run: the promise is checked by the fuzz test itself,
    whatever runs before or after it (a separate test read a module global, and passed or
    failed depending on test order).
    """
    counts: Counter[str] = Counter()
    yield counts
    assert counts["requests"] >= EXAMPLES, counts
    for kind in ("2xx", "4xx", "jobs created", "idempotent replays", "status reads", "refused"):
        assert counts[kind] > 0, (kind, counts)
    record(
        "fuzzing (app-proxy endpoints)",
        requests=counts["requests"],
        answered_2xx=counts["2xx"],
        answered_4xx=counts["4xx"],
        answered_5xx=counts["5xx"],
        jobs_created=counts["jobs created"],
        idempotent_replays=counts["idempotent replays"],
        status_reads=counts["status reads"],
        rows_written_by_refused_requests=counts["rows written by refused requests"],
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(request=requests())
async def test_generated_requests_get_no_5xx_and_write_only_what_they_were_answered(
    request: Fuzzed,
    app_client: httpx.AsyncClient,
    target: Target,
    database: Database,
    redis: ArqRedis,
    tally: Counter[str],
) -> None:
    url = f"{request.path}?{query_for(request, target)}"
    before = await counts(database, redis)
    answer = await app_client.request(
        request.method, url, headers=list(request.headers), content=request.body
    )
    after = await counts(database, redis)
    tally["requests"] += 1
    tally[f"{answer.status_code // 100}xx"] += 1
    status = answer.status_code
    assert status < 500, (request, answer.text)

    is_route = request.path in ("/proxy/process", "/proxy/status", "/proxy/st%61tus")
    right_method = (request.path == "/proxy/process" and request.method == "POST") or (
        request.path != "/proxy/process" and request.method in ("GET", "HEAD")
    )
    if request.method != "HEAD" and status >= 400:
        body = answer.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), answer.text
    if is_route and right_method and request.broken:
        assert status == 401, (request, status, answer.text)

    creates = request.path == "/proxy/process" and request.method == "POST"
    if creates and 200 <= status < 300:
        job_id = uuid.UUID(answer.json()["jobId"])
        job = await store.get_job(database, job_id)
        assert job is not None, "a 2xx for a job that has no row"
        signed_shop = target.shops.get(request.shop)
        assert signed_shop is not None and job.shop_id == signed_shop.id
        if after[0] == before[0] + 1:  # a new job: one row and one queue entry, nothing else
            assert after[1:] == (before[1], before[2], before[3] + 1), (before, after)
            assert await queued_score(redis, str(job_id)) is not None
            tally["jobs created"] += 1
        else:  # the same Idempotency-Key again: the same job, nothing written
            assert after == before, (before, after)
            assert job.idempotency_key is not None
            tally["idempotent replays"] += 1
    else:
        if status >= 400:
            tally["refused"] += 1
            tally["rows written by refused requests"] += sum(
                abs(a - b) for a, b in zip(after, before, strict=True)
            )
        assert after == before, (request, status, before, after)
    if request.method == "GET" and status == 200 and request.path != "/proxy/process":
        shown = await store.get_job(database, uuid.UUID(answer.json()["jobId"]))
        assert shown is not None and shown.shop_id == target.shops[request.shop].id
        assert shown.customer_id in (None, request.customer)
        tally["status reads"] += 1
    reads_known_job = request.job_ref in target.jobs and request.method == "GET"
    if request.clean and is_route and request.path != "/proxy/process" and reads_known_job:
        job = target.jobs[request.job_ref]
        owner = target.shops[request.shop].id == job.shop_id
        visible = owner and job.customer_id in (None, request.customer)
        assert status == (200 if visible else 404), (request, status, answer.text)
