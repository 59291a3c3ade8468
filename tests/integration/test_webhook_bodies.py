"""POST /webhooks reads bodies from anyone before the HMAC check: size, time and memory stay
bounded. Raw HTTP/1.1 against a real `uvicorn service.app:app`, as a hostile sender would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from service.shopify.signatures import webhook_hmac
from tests.support.config import TEST_SECRET
from tests.support.net import free_port, wait_for_http
from tests.support.processes import web_command

MIB = 1024 * 1024
LIMIT = MIB  # WEBHOOK_MAX_BODY_BYTES's default
UPLOADS = 40
BUDGET = 4 * MIB  # room for 4 bodies of LIMIT bytes
# Guards against a hang when a fix is missing; no answer is expected to take anywhere near it.
HANG_GUARD_SECONDS = 60


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


class Upload:
    """One POST /webhooks on its own connection, sent piece by piece."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def start(cls, port: int, length: int) -> Upload:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
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
    announced = await Upload.start(port, 2 * MIB)  # no byte of the body is ever sent
    status, rest = await asyncio.wait_for(announced.answer(), HANG_GUARD_SECONDS)
    announced.close()
    assert status == 413 and '"error":"Request body too large"' in rest
    assert '"limit":1048576' in rest

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(LIMIT // 65536 + 2):
            yield b" " * 65536

    async with httpx.AsyncClient(timeout=HANG_GUARD_SECONDS) as client:
        chunked = await client.post(
            f"http://127.0.0.1:{port}/webhooks",
            content=chunks(),
            headers={"X-Shopify-Hmac-Sha256": "bm9wZQ=="},
        )
    assert chunked.status_code == 413 and chunked.json()["error"] == "Request body too large"


async def test_a_slow_sender_gets_408_and_gives_its_budget_back(env: dict[str, str], spawn) -> None:
    base, port, _ = start_web(
        spawn, env, webhook_read_timeout_seconds=1, webhook_body_budget_bytes=LIMIT
    )
    slow = await Upload.start(port, 1000)
    await slow.send(b'{"id": 1')  # ...and nothing more
    status, rest = await asyncio.wait_for(slow.answer(), HANG_GUARD_SECONDS)
    slow.close()
    assert status == 408 and '"error":"Request body not received in time"' in rest
    # The whole budget is free again: a delivery of the largest size is read.
    body = b'{"id": 1}'.ljust(LIMIT)
    async with httpx.AsyncClient(base_url=base, timeout=HANG_GUARD_SECONDS) as client:
        answer = await client.post(
            "/webhooks",
            content=body,
            headers={
                "X-Shopify-Topic": "x/y",
                "X-Shopify-Shop-Domain": "any-shop.myshopify.com",
                "X-Shopify-Event-Id": "e-1",
                "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET),
            },
        )
    assert answer.status_code == 200 and answer.json() == {"status": "ignored"}


async def test_held_uploads_beyond_the_budget_get_503_and_memory_stays_bounded(
    env: dict[str, str], spawn
) -> None:
    base, port, pid = start_web(
        spawn, env, webhook_read_timeout_seconds=600, webhook_body_budget_bytes=BUDGET
    )
    before = rss_mib(pid)
    uploads = [await Upload.start(port, LIMIT) for _ in range(UPLOADS)]
    answers = {asyncio.ensure_future(upload.answer()): upload for upload in uploads}
    refused: list[tuple[int, str]] = []
    pending = set(answers)
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        while len(refused) < UPLOADS - BUDGET // LIMIT:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            refused += [task.result() for task in done]
    assert all(status == 503 for status, _ in refused), refused
    assert all("retry-after: 5" in rest.lower() for _, rest in refused)
    assert all("Too many webhook bodies in flight" in rest for _, rest in refused)

    held = [answers[task] for task in pending]
    assert len(held) == BUDGET // LIMIT
    for upload in held:  # all but the last byte: the server holds them all
        await upload.send(b" " * (LIMIT - 1))
    while_held = rss_mib(pid)
    for upload in held:  # the last byte: read in full, then refused by the HMAC check
        await upload.send(b" ")
    finished = await asyncio.wait_for(asyncio.gather(*pending), HANG_GUARD_SECONDS)
    assert [status for status, _ in finished] == [401] * len(held)
    for upload in uploads:
        upload.close()
    after = rss_mib(pid)
    print(
        f"\nwebhook bodies: {UPLOADS} uploads of {LIMIT // MIB} MiB, budget {BUDGET // MIB} MiB:"
        f" {len(refused)} refused with 503, {len(held)} held;"
        f" web RSS {before:.0f} MiB before, {while_held:.0f} MiB while held, {after:.0f} after"
    )
    # Held bodies cost about what they hold; all 40 would cost ten times the budget.
    assert while_held - before < UPLOADS * LIMIT / MIB / 2
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/healthz")).status_code == 200
