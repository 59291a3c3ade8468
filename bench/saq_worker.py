"""The SAQ baseline: a SAQ worker running a no-op function at the given concurrency.

`python -m bench.saq_worker REDIS_URL QUEUE CONCURRENCY`; SAQ's defaults otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from saq import Queue, Worker


async def noop(ctx: dict[str, Any]) -> None:
    return None


def main(argv: list[str]) -> None:
    url, name, concurrency = argv
    queue = Queue.from_url(url, name=name)
    worker = Worker(queue, functions=[noop], concurrency=int(concurrency))
    asyncio.run(worker.start())


if __name__ == "__main__":
    main(sys.argv[1:])
