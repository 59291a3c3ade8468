"""POST /webhooks reads bodies from anyone before the HMAC check: size, time and memory stay
bounded, and nothing a sender holds without sending makes a signed webhook wait or fail. Raw
HTTP/1.1 against a real `uvicorn service.app:app`, as a hostile sender would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from databases import Database

from service import store
from service.shopify.signatures import webhook_hmac
from tests.support.config import TEST_SECRET
from tests.support.net import free_port, wait_for_http
from tests.support.processes import web_command
from tests.support.shopify_payloads import product_update, product_update_body

MIB = 1024 * 1024
LIMIT = 16 * MIB  # WEBHOOK_MAX_BODY_BYTES's default
SHOPIFY_TIMEOUT_SECONDS = 5  # Shopify gives up on a webhook answer after this
# Guards against a hang when a fix is missing; no answer is expected to take anywhere near it.
HANG_GUARD_SECONDS = 60
IDLE = 200
TRICKLING = 50
SHOP = "held-open.myshopify.com"
GONE = "gone-already.myshopify.com"  # never installed: its uninstall needs no confirmation


def start_web(spawn, env: dict[str, str], **settings: object) -> tuple[str, int, int]:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = spawn(web_command(port), {**env, **{k.upper(): str(v) for k, v in settings.items()}})
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz")
    return base, port, proc.popen.pid


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def signed_headers(body: bytes, topic: str, shop: str, event_id: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET),
    }
    if topic == "app/uninstalled":
        headers["X-Shopify-Triggered-At"] = datetime.now(UTC).isoformat()
    return headers


class Upload:
    """One POST /webhooks on its own connection, sent piece by piece."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def start(cls, port: int, length: int, source: str = "127.0.0.1") -> Upload:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(
            b"POST /webhooks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + b"X-Shopify-Topic: products/update\r\nX-Shopify-Hmac-Sha256: bm9wZQ==\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode()
        )
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, str]:
        """The status, and the headers and body as one text."""
        status_line = await self.reader.readline()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode()
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        body = await self.reader.readexactly(length)
        return int(status_line.split()[1]), head + body.decode()

    def close(self) -> None:
        self.writer.close()


async def test_oversized_bodies_are_refused_before_they_are_read(
    env: dict[str, str], spawn
) -> None:
    _, port, _ = start_web(spawn, env)
    announced = await Upload.start(port, LIMIT + 1)  # no byte of the body is ever sent
    status, rest = await asyncio.wait_for(announced.answer(), HANG_GUARD_SECONDS)
    announced.close()
    assert status == 413 and '"error":"Request body too large"' in rest
    assert f'"limit":{LIMIT}' in rest

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(LIMIT // MIB + 2):
            yield b" " * MIB

    async with httpx.AsyncClient(timeout=HANG_GUARD_SECONDS) as client:
        chunked = await client.post(
            f"http://127.0.0.1:{port}/webhooks",
            content=chunks(),
            headers={"X-Shopify-Hmac-Sha256": "bm9wZQ=="},
        )
    assert chunked.status_code == 413 and chunked.json()["error"] == "Request body too large"


async def test_a_slow_sender_gets_408_and_gives_its_budget_back(env: dict[str, str], spawn) -> None:
    small = MIB  # every budget the size of one body: anything left charged would refuse it
    base, port, _ = start_web(
        spawn,
        env,
        webhook_max_body_bytes=small,
        webhook_client_budget_bytes=small,
        webhook_body_budget_bytes=small,
    )
    slow = await Upload.start(port, 1000)
    await slow.send(b'{"id": 1')  # ...and nothing more
    status, rest = await asyncio.wait_for(slow.answer(), HANG_GUARD_SECONDS)
    slow.close()
    assert status == 408 and '"error":"Request body not received in time"' in rest
    # The whole budget is free again: a delivery of the largest size is read.
    body = b'{"id": 1}'.ljust(small)
    async with httpx.AsyncClient(base_url=base, timeout=HANG_GUARD_SECONDS) as client:
        answer = await client.post(
            "/webhooks", content=body, headers=signed_headers(body, "x/y", SHOP, "e-1")
        )
    assert answer.status_code == 200 and answer.json() == {"status": "ignored"}


class Crowd:
    """Connections that announce a large body and send nothing (idle) or a byte a second
    (trickling), each reopened as soon as the server drops it: what a sender without the
    secret can keep up for as long as it likes."""

    def __init__(self, port: int, idle: int, trickling: int) -> None:
        self.port, self.idle, self.trickling = port, idle, trickling
        self.open = 0
        self.most_open = 0
        self.started = 0
        self.all_started = asyncio.Event()
        self.dropped = 0
        self.statuses: dict[int, int] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def _hold(self, trickle: bool) -> None:
        first = True
        while True:
            try:
                upload = await Upload.start(self.port, MIB)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            self.open += 1
            self.started += first
            if self.started == self.idle + self.trickling:
                self.all_started.set()
            first = False
            self.most_open = max(self.most_open, self.open)
            answer = asyncio.ensure_future(upload.answer())
            try:
                while trickle and not answer.done():
                    with contextlib.suppress(OSError):
                        await upload.send(b" ")
                    await asyncio.wait({answer}, timeout=1)
                status, _ = await answer
                self.statuses[status] = self.statuses.get(status, 0) + 1
            except (OSError, asyncio.IncompleteReadError, ValueError):
                pass
            finally:
                self.open -= 1
                self.dropped += 1
                upload.close()
                answer.cancel()
                if answer.done() and not answer.cancelled():
                    answer.exception()  # read, so that asyncio does not log it
            await asyncio.sleep(0.1)  # then straight back

    async def __aenter__(self) -> Crowd:
        self.tasks = [
            asyncio.ensure_future(self._hold(trickle=n >= self.idle))
            for n in range(self.idle + self.trickling)
        ]
        await asyncio.wait_for(self.all_started.wait(), HANG_GUARD_SECONDS)
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_idle_and_trickling_connections_never_make_a_signed_webhook_wait(
    env: dict[str, str], spawn, database: Database
) -> None:
    """Before, 16 idle connections announcing 1 MiB took the whole budget: 503 for everyone."""
    base, port, _ = start_web(spawn, env)
    await store.upsert_shop(database, SHOP, "t", "")
    deliveries: list[tuple[str, bytes]] = [
        (
            "customers/redact",
            orjson.dumps({"shop_id": 1, "shop_domain": SHOP, "customer": {"id": 7}}),
        ),
        (
            "customers/data_request",
            orjson.dumps({"shop_id": 1, "shop_domain": SHOP, "customer": {"id": 8}}),
        ),
        (
            "products/update",
            orjson.dumps({"id": 1, "admin_graphql_api_id": "gid://shopify/Product/1"}),
        ),
        ("orders/create", orjson.dumps({"id": 2})),
        ("products/update", product_update_body(SHOP)),
        # Signed and answered at once: the shop it names is not installed, so nothing needs
        # Shopify's confirmation (tests/integration/test_webhook_forgery.py tests that path).
        ("app/uninstalled", orjson.dumps({"id": 2, "myshopify_domain": GONE})),
    ]
    timings: list[tuple[str, int, float]] = []
    async with (
        Crowd(port, IDLE, TRICKLING) as crowd,
        httpx.AsyncClient(base_url=base, timeout=HANG_GUARD_SECONDS) as client,
    ):
        held_at_start = crowd.open
        # Rounds spread over more than the first-bytes deadline: the crowd is dropped and
        # reopened while webhooks keep arriving.
        for round_ in range(3):
            for n, (topic, body) in enumerate(deliveries):
                began = time.monotonic()
                answer = await client.post(
                    "/webhooks",
                    content=body,
                    headers=signed_headers(
                        body, topic, GONE if topic == "app/uninstalled" else SHOP, f"c{round_}-{n}"
                    ),
                )
                took = time.monotonic() - began
                timings.append((topic, answer.status_code, took))
                assert answer.status_code == 200, (topic, answer.status_code, answer.text)
            await asyncio.sleep(1.5)
        assert crowd.open >= (IDLE + TRICKLING) // 2  # the crowd was still there at the end
        assert crowd.most_open == IDLE + TRICKLING
        most_open, dropped, statuses = crowd.most_open, crowd.dropped, dict(crowd.statuses)
    slowest = max(took for _, _, took in timings)
    print(
        f"\ncrowd of {IDLE} idle + {TRICKLING} trickling connections ({held_at_start} open at"
        f" start, at most {most_open} at once, {dropped} dropped by the server and reopened,"
        f" answers {statuses}): {len(timings)} signed webhooks all 200,"
        f" slowest {slowest * 1000:.0f} ms"
    )
    assert slowest < SHOPIFY_TIMEOUT_SECONDS
    assert [t for t in timings if t[0] == "app/uninstalled"] != []
    assert set(statuses) <= {408}  # idle and trickling senders are cut off for being slow


async def test_a_product_with_2048_variants_is_accepted_with_the_defaults(
    env: dict[str, str], spawn, database: Database
) -> None:
    """Shopify's largest products/update (about 2 MiB); before, the 1 MiB limit refused it."""
    base, _, pid = start_web(spawn, env)
    shop = "many-variants.myshopify.com"
    await store.upsert_shop(database, shop, "t", "")
    payload = product_update(shop)
    # Eight different updates of the product (the same body twice would be a replay).
    bodies = [
        orjson.dumps({**payload, "updated_at": f"2026-12-07T12:00:{n:02d}-05:00"}) for n in range(8)
    ]
    body = bodies[0]
    assert len(body) > MIB
    concurrent = len(bodies)
    before = rss_mib(pid)
    async with httpx.AsyncClient(base_url=base, timeout=HANG_GUARD_SECONDS) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/webhooks",
                    content=each,
                    headers=signed_headers(each, "products/update", shop, f"big-{n}"),
                )
                for n, each in enumerate(bodies)
            )
        )
    after = rss_mib(pid)
    assert [a.status_code for a in answers] == [200] * concurrent, answers[0].text
    assert {a.json()["status"] for a in answers} == {"queued"}
    print(
        f"\n{concurrent} concurrent products/update of {len(body) / MIB:.2f} MiB"
        f" (2,048 variants): all 200 queued; web RSS {before:.0f} MiB before, {after:.0f} after"
    )
    # Each body is held once while read and parsed once after its HMAC passes (about ten
    # times its size as Python objects): bounded by what Shopify sends, not by a sender.
    assert after - before < concurrent * 12 * len(body) / MIB


async def test_one_client_holds_at_most_its_share_and_memory_stays_bounded(
    env: dict[str, str], spawn
) -> None:
    """Bodies actually sent are what counts: one address may hold WEBHOOK_CLIENT_BUDGET_BYTES;
    past it its uploads get 503, and a signed webhook from elsewhere is still read."""
    body_size, client_budget, budget, uploads = MIB, 2 * MIB, 4 * MIB, 40
    base, port, pid = start_web(
        spawn,
        env,
        webhook_max_body_bytes=body_size,
        webhook_client_budget_bytes=client_budget,
        webhook_body_budget_bytes=budget,
        webhook_read_timeout_seconds=600,
        webhook_min_bytes_per_second=1,
        webhook_first_bytes_seconds=600,
    )
    before = rss_mib(pid)
    held_by = "127.0.0.2"  # another loopback address: another client
    crowd = [await Upload.start(port, body_size, source=held_by) for _ in range(uploads)]
    answers = {asyncio.ensure_future(upload.answer()): upload for upload in crowd}

    async def send_all_but_the_last_byte(upload: Upload) -> None:
        with contextlib.suppress(OSError):  # refused: the server stops reading
            await upload.send(b" " * (body_size - 1))

    sending = asyncio.gather(*(send_all_but_the_last_byte(u) for u in crowd))
    refused = 0
    pending = set(answers)
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        while refused < uploads - client_budget // body_size:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:  # else reset: refused while still sending
                    status, rest = task.result()
                    assert status == 503 and "Too many webhook bodies in flight" in rest
                    assert "retry-after: 5" in rest.lower()
                refused += 1
    await sending
    held = [answers[task] for task in pending]
    assert len(held) == client_budget // body_size
    while_held = rss_mib(pid)
    signed = b'{"id": 3}'.ljust(body_size - 1)
    async with httpx.AsyncClient(base_url=base, timeout=HANG_GUARD_SECONDS) as client:
        answer = await client.post(
            "/webhooks", content=signed, headers=signed_headers(signed, "x/y", SHOP, "e-3")
        )
    assert answer.status_code == 200 and answer.json() == {"status": "ignored"}
    for upload in held:  # the last byte: read in full, then refused by the HMAC check
        await upload.send(b" ")
    finished = await asyncio.wait_for(asyncio.gather(*pending), HANG_GUARD_SECONDS)
    assert [status for status, _ in finished] == [401] * len(held)
    for upload in crowd:
        upload.close()
    after = rss_mib(pid)
    print(
        f"\n{uploads} uploads of {body_size // MIB} MiB from one client, its budget"
        f" {client_budget // MIB} MiB: {refused} refused with 503, {len(held)} held, a signed"
        f" webhook from another client 200; web RSS {before:.0f} MiB before,"
        f" {while_held:.0f} MiB while held, {after:.0f} after"
    )
    # Held bodies cost about what they hold; all 40 would cost ten times the process budget.
    assert while_held - before < uploads * body_size / MIB / 2
