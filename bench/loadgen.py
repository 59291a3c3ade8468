"""A small closed-loop HTTP/1.1 load generator, run as its own process by the harness.

`python -m bench.loadgen --port P --path /x --connections 50 --duration 10 [--method POST
--body '{...}' --header 'Name: value']` keeps that many keep-alive connections busy, each
sending the same request again as soon as the previous answer is complete, and prints one JSON
line: requests, statuses, requests per second and the CPU it used itself.

Why not httpx: a Python HTTP client spends more CPU per request than uvicorn does answering a
bare route, so it would measure itself. This one sends pre-built bytes and parses only the
status line and Content-Length, so on a 2-core machine it leaves the server the bigger share;
its own CPU use is reported so a saturated client is visible in the results.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from collections import Counter


class Stats:
    def __init__(self) -> None:
        self.counting = False
        self.statuses: Counter[int] = Counter()
        self.reconnects = 0


class Connection(asyncio.Protocol):
    def __init__(self, request: bytes, stats: Stats, stop_at: float, done: asyncio.Future) -> None:
        self.request = request
        self.stats = stats
        self.stop_at = stop_at
        self.done = done
        self.buffer = bytearray()
        self.need: int | None = None
        self.status = 0
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                raise RuntimeError("loadgen: answer without Content-Length")
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            self.need = end + 4 + length
        if len(self.buffer) < self.need:
            return
        del self.buffer[: self.need]
        self.need = None
        if self.stats.counting:
            self.stats.statuses[self.status] += 1
        assert self.transport is not None
        if self.loop.time() < self.stop_at:
            self.transport.write(self.request)
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.loop.time() < self.stop_at)


def build_request(args: argparse.Namespace) -> bytes:
    body = args.body.encode() if args.body is not None else b""
    lines = [
        f"{args.method} {args.path} HTTP/1.1",
        f"Host: {args.host}:{args.port}",
        "Connection: keep-alive",
        *args.header,
    ]
    if args.body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def connection_loop(
    args: argparse.Namespace, request: bytes, stats: Stats, stop_at: float
) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        done: asyncio.Future[bool] = loop.create_future()
        await loop.create_connection(
            functools.partial(Connection, request, stats, stop_at, done), args.host, args.port
        )
        if await done:  # closed by the server before the end: open another
            stats.reconnects += 1


async def run(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    request = build_request(args)
    stats = Stats()
    begin = loop.time()
    stop_at = begin + args.warmup + args.duration
    tasks = [
        asyncio.create_task(connection_loop(args, request, stats, stop_at))
        for _ in range(args.connections)
    ]
    await asyncio.sleep(args.warmup)
    stats.counting = True
    cpu0, wall0 = time.process_time(), loop.time()
    await asyncio.sleep(max(0.0, stop_at - loop.time()))
    stats.counting = False
    cpu1, wall1 = time.process_time(), loop.time()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    seconds = wall1 - wall0
    total = sum(stats.statuses.values())
    ok = sum(n for status, n in stats.statuses.items() if 200 <= status < 300)
    return {
        "requests": total,
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "seconds": round(seconds, 3),
        "rps": round(ok / seconds, 1) if seconds > 0 else 0.0,
        "client_cpu_percent": round(100 * (cpu1 - cpu0) / seconds, 1) if seconds > 0 else 0.0,
        "reconnects": stats.reconnects,
        "connections": args.connections,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        from uvloop import run as runner
    except ImportError:
        runner = asyncio.run
    result = runner(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
