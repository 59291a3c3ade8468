"""A burst of webhooks for one product, collapsed by a debounce (issue 28, docs/starting-jobs.md).

Real processes: the web (`uvicorn bench.web_app:app`) and one worker, both started through
this module (`python -m bench.burst <module> ...`), which registers one bench-only job type
beside the product's, as tests/support/flow_jobs.py does for the tests:

- `burst_echo`: returns its input (the product's id, the event's `n` and `updated_at`); started
  by `products/update` with `Debounce(key=lambda p: str(p["id"]), seconds=5, max_seconds=30)`.

The harness then sends WEBHOOKS signed `products/update` webhooks for ONE product within
WINDOW_SECONDS (one every WINDOW_SECONDS / WEBHOOKS, each without waiting for the earlier
answers; the last one once every earlier one is answered, so that it is the last event the web
records), each with its own event id and its own body (`n` and `updated_at` increase: an
identical body would be a replay). Measured, from Postgres (both clocks are its `now()`):

- the `burst_echo` jobs created and run (rows with a `started_at`): the goal is exactly 1;
- whether the job ran with the last webhook's input (its row's input and its result);
- its `started_at` after the last webhook's `received_at`: the goal is within the debounce's
  5 s + 1 s;
- the `products/update` events recorded in `webhook_events` (the goal: every webhook) and the
  webhooks answered other than 200 (the goal: none).

After the first run ends, the harness waits SETTLE_SECONDS more, so that a second job (which
should not exist) would be seen too.
"""

from __future__ import annotations

import asyncio
import os
import runpy
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

import jobs.registry
from jobs import Debounce
from jobs.types import JobContext, JobType, WebhookJob
from service.core.settings import Settings

TOPIC = "products/update"
JOB_TYPE = "burst_echo"
PRODUCT_ID = 632910392
WEBHOOKS = 100
WINDOW_SECONDS = 2.0
DEBOUNCE_SECONDS = 5.0
DEBOUNCE_MAX_SECONDS = 30.0
START_SLACK_SECONDS = 1.0  # the goal: started within the debounce + this, after the last event
SETTLE_SECONDS = 1.0
SEND_FRACTION = 0.95  # the sends are spread over this much of the window: the last fits in it


class BurstInput(BaseModel):
    product: str
    n: int
    updated_at: str


async def burst_echo(ctx: JobContext, data: BurstInput) -> dict[str, Any]:
    return data.model_dump(mode="json")


BURST_ECHO = JobType(name=JOB_TYPE, input_model=BurstInput, handler=burst_echo)


def burst_input(payload: dict[str, Any]) -> dict[str, Any]:
    return {"product": str(payload["id"]), "n": payload["n"], "updated_at": payload["updated_at"]}


def job_types(settings: Settings) -> dict[str, JobType]:
    return {**_product_job_types(settings), JOB_TYPE: BURST_ECHO}


def webhook_jobs(settings: Settings) -> dict[str, tuple[WebhookJob, ...]]:
    """The deployment's webhook jobs, with `products/update` starting only the burst's job."""
    return {
        **_product_webhook_jobs(settings),
        TOPIC: (
            WebhookJob(
                BURST_ECHO,
                burst_input,
                debounce=Debounce(
                    key=lambda p: str(p["id"]),
                    seconds=DEBOUNCE_SECONDS,
                    max_seconds=DEBOUNCE_MAX_SECONDS,
                ),
            ),
        ),
    }


_product_job_types = jobs.registry.job_types
_product_webhook_jobs = jobs.registry.webhook_jobs


def burst_command(command: list[str]) -> list[str]:
    """A `python -m <module> ...` command, run with the burst's type and route registered."""
    python, flag, *rest = command
    assert flag == "-m", command
    return [python, "-m", "bench.burst", *rest]


def payload(n: int, began: datetime) -> dict[str, Any]:
    """The n-th update of the product: a body of its own (`n`, `updated_at` increase)."""
    updated = (began + timedelta(milliseconds=n)).isoformat(timespec="milliseconds")
    return {
        "id": PRODUCT_ID,
        "admin_graphql_api_id": f"gid://shopify/Product/{PRODUCT_ID}",
        "title": "Burst product",
        "n": n,
        "updated_at": updated,
    }


async def send_burst(web_url: str) -> dict[str, Any]:
    """The WEBHOOKS deliveries (see the module's docstring): their answers and timings."""
    import httpx
    import orjson

    from bench.stack import API_SECRET, SHOP
    from service.shopify.signatures import webhook_hmac

    began_at = datetime.now(UTC)
    bodies = [orjson.dumps(payload(n, began_at)) for n in range(WEBHOOKS)]
    event_ids = [str(uuid.uuid4()) for _ in range(WEBHOOKS)]
    gap = WINDOW_SECONDS * SEND_FRACTION / max(1, WEBHOOKS - 1)
    answers: list[tuple[int, str]] = [(0, "")] * WEBHOOKS
    answer_ms: list[float] = []

    async with httpx.AsyncClient(base_url=web_url, timeout=10) as client:

        async def deliver(n: int) -> None:
            headers = {
                "X-Shopify-Topic": TOPIC,
                "X-Shopify-Shop-Domain": SHOP,
                "X-Shopify-Event-Id": event_ids[n],
                "X-Shopify-Webhook-Id": event_ids[n],
                "X-Shopify-Hmac-Sha256": webhook_hmac(bodies[n], API_SECRET),
                "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
                "Content-Type": "application/json",
            }
            posted = time.perf_counter()
            try:
                answer = await client.post("/webhooks", content=bodies[n], headers=headers)
            except httpx.HTTPError as exc:
                answers[n] = (0, f"error: {type(exc).__name__}")
                return
            answer_ms.append((time.perf_counter() - posted) * 1000)
            status = ""
            if answer.status_code == 200:
                status = str(answer.json().get("status", ""))
            answers[n] = (answer.status_code, status)

        start = time.perf_counter()
        sending: list[asyncio.Task[None]] = []
        for n in range(WEBHOOKS - 1):
            await asyncio.sleep(max(0.0, start + n * gap - time.perf_counter()))
            sending.append(asyncio.create_task(deliver(n)))
        await asyncio.gather(*sending)
        await asyncio.sleep(max(0.0, start + (WEBHOOKS - 1) * gap - time.perf_counter()))
        await deliver(WEBHOOKS - 1)
        spent = time.perf_counter() - start
    codes = Counter(code for code, _ in answers)
    return {
        "burst_seconds": round(spent, 3),
        "answers_by_code": {str(code): count for code, count in sorted(codes.items())},
        "answers_by_status": dict(Counter(status for code, status in answers if code == 200)),
        "non_200": sum(count for code, count in codes.items() if code != 200),
        "answer_p50_ms": round(statistics.median(answer_ms), 1) if answer_ms else None,
        "answer_max_ms": round(max(answer_ms), 1) if answer_ms else None,
        "last_event_id": event_ids[-1],
        "last_input": burst_input(orjson.loads(bodies[-1])),
    }


async def burst(stack: Any, plan: Any) -> dict[str, Any]:
    """Start the web and the worker, send the burst, wait for the job, read what happened."""
    from bench.stack import wait_for_http, web_command, worker_command
    from tools.services import free_port

    assert stack.pg is not None
    await stack.reset()
    web_port, health_port = free_port(), free_port()
    web = stack.spawn(burst_command(web_command(web_port)), stack.env(), "burst-web")
    worker = stack.spawn(
        burst_command(worker_command()),
        stack.env(worker_concurrency=10, worker_health_port=health_port),
        "burst-worker",
    )
    procs = [web, worker]
    try:
        await wait_for_http(f"http://127.0.0.1:{web_port}/healthz", web, "web")
        await wait_for_http(f"http://127.0.0.1:{health_port}/healthz", worker, "worker")
        sent = await send_burst(f"http://127.0.0.1:{web_port}")
        timeout = DEBOUNCE_MAX_SECONDS + 10
        deadline = time.monotonic() + timeout
        first_done: float | None = None
        while time.monotonic() < deadline:
            for proc in procs:
                proc.check_alive(proc.log_path.stem)
            counts = await stack.pg.fetchrow(
                """SELECT count(*) AS rows,
                          count(*) FILTER (WHERE status IN ('completed', 'failed')) AS final
                     FROM jobs WHERE type = $1""",
                JOB_TYPE,
            )
            if counts["final"] > 0 and first_done is None:
                first_done = time.monotonic()
            if (
                first_done is not None
                and counts["final"] == counts["rows"]
                and time.monotonic() - first_done >= SETTLE_SECONDS
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(
                f"burst bench: no {JOB_TYPE} job ended within {timeout:g}s"
                + "".join(f"\n--- {p.log_path.name}\n{p.output()[-3000:]}" for p in procs)
            )
        rows = await stack.pg.fetch(
            """SELECT status, input, result, attempts, created_at, run_at, started_at, finished_at
                 FROM jobs WHERE type = $1 ORDER BY created_at""",
            JOB_TYPE,
        )
        events = await stack.pg.fetchrow(
            """SELECT count(*) AS recorded, count(DISTINCT job_id) AS jobs_linked,
                      min(received_at) AS first, max(received_at) AS last_received
                 FROM webhook_events WHERE topic = $1""",
            TOPIC,
        )
        last_received = await stack.pg.fetchval(
            "SELECT received_at FROM webhook_events WHERE event_id = $1", sent["last_event_id"]
        )
    finally:
        for proc in reversed(procs):
            proc.stop()
    return summarize(sent, rows, events, last_received)


def summarize(
    sent: dict[str, Any], rows: list[Any], events: Any, last_received: datetime | None
) -> dict[str, Any]:
    import orjson

    def loaded(value: Any) -> Any:
        return orjson.loads(value) if isinstance(value, str | bytes) else value

    def after_last(moment: datetime | None) -> float | None:
        if moment is None or last_received is None:
            return None
        return round((moment - last_received).total_seconds(), 3)

    jobs = [
        {
            "status": row["status"],
            "attempts": row["attempts"],
            "input": loaded(row["input"]),
            "result": loaded(row["result"]),
            "created_after_last_s": after_last(row["created_at"]),
            "started_after_last_s": after_last(row["started_at"]),
            "finished_after_last_s": after_last(row["finished_at"]),
        }
        for row in rows
    ]
    ran = [job for job in jobs if job["started_after_last_s"] is not None]
    last_input = sent["last_input"]
    window = None
    if events["first"] is not None and events["last_received"] is not None:
        window = round((events["last_received"] - events["first"]).total_seconds(), 3)
    return {
        "webhooks": WEBHOOKS,
        "window_seconds": WINDOW_SECONDS,
        "debounce_seconds": DEBOUNCE_SECONDS,
        "debounce_max_seconds": DEBOUNCE_MAX_SECONDS,
        "start_limit_seconds": DEBOUNCE_SECONDS + START_SLACK_SECONDS,
        **{key: value for key, value in sent.items() if key != "last_event_id"},
        "events_recorded": events["recorded"],
        "events_jobs_linked": events["jobs_linked"],
        "events_window_seconds": window,
        "jobs": jobs,  # every burst_echo row, in creation order
        "jobs_created": len(jobs),
        "jobs_ran": len(ran),
        # Every job that ran had the last webhook's input (and returned it): true only if some ran.
        "ran_with_last_input": bool(ran)
        and all(job["input"] == job["result"] == last_input for job in ran),
        # The first start after the last event (the only one, when the goal is met).
        "start_after_last_s": min((job["started_after_last_s"] for job in ran), default=None),
    }


if __name__ == "__main__":
    # Before the module runs (uvicorn imports service.app, which reads the registry then).
    assert "service.app" not in sys.modules
    jobs.registry.job_types = job_types
    jobs.registry.webhook_jobs = webhook_jobs
    module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    runpy.run_module(module, run_name="__main__", alter_sys=True)
