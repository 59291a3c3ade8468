"""Fault suite: Postgres restarted mid-run loses no status, and the real web process answers 503,
never 500, while it is down (issue 8). Sizes: tests/faults_helpers.py."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

import httpx
from databases import Database

from jobs.context import RunContext
from service.db import create_database
from tests.breakable import PostgresControl, Relay
from tests.faults_helpers import (
    check_effects,
    record,
    signed,
    sized,
    start_web,
    wait_completed,
)
from tests.jobs_helpers import make_shop, wait_all
from tests.test_worker import start_worker

SHOP = "pg-restart.myshopify.com"


def echo(i: int, rng: random.Random) -> dict[str, object]:
    sleep_ms = rng.randint(*sized((200, 800), (500, 2500))) if rng.random() < 0.6 else 0
    return {
        "type": "echo",
        "input": {"message": f"pg-{i}", "sleep_ms": sleep_ms, "record_effect": "with_completion"},
    }


async def hammer(web: httpx.AsyncClient, job_id: str, answers: Counter[str], stop: asyncio.Event):
    """Create, poll and check health in a loop, tallying `endpoint status` for every answer."""
    rng = random.Random(5)
    while not stop.is_set():
        for name, send in (
            (
                "POST /proxy/process",
                lambda: web.post(signed("/proxy/process", SHOP), json=echo(0, rng)),
            ),
            ("GET /proxy/status", lambda: web.get(signed(f"/proxy/status?jobId={job_id}", SHOP))),
            ("GET /healthz", lambda: web.get("/healthz")),
        ):
            answer = await send()
            answers[f"{name} {answer.status_code}"] += 1
            if answer.status_code == 200 and name == "POST /proxy/process":
                answers["created"] += 1
                answers[f"id {answer.json()['jobId']}"] += 1
            elif answer.status_code != 200:
                assert answer.status_code == 503, (name, answer.status_code, answer.text)
                assert "error" in answer.json() or answer.json().get("status") == "error"
        await asyncio.sleep(0.02)


async def test_postgres_restart_mid_run_loses_no_status_and_the_web_says_503(
    env, spawn, servers, settings
) -> None:
    count = sized(40, 200)
    database = create_database(settings.database_url)
    await database.connect()
    await database.execute("TRUNCATE shops, jobs, echo_effects RESTART IDENTITY CASCADE")
    await make_shop(database, SHOP)
    # One attempt only: an outage must not cost a job an attempt, let alone fail it.
    worker = start_worker(spawn, env, worker_concurrency=sized(5, 10), job_max_attempts=1)
    web_proc, base = start_web(spawn, env)
    rng = random.Random(11)
    ids: list[uuid.UUID] = []
    answers: Counter[str] = Counter()
    postgres = PostgresControl(servers)
    async with httpx.AsyncClient(base_url=base, timeout=10) as web:
        for i in range(count):
            made = await web.post(signed("/proxy/process", SHOP), json=echo(i, rng))
            assert made.status_code == 200, made.text
            ids.append(uuid.UUID(made.json()["jobId"]))
        await wait_completed(database, 5)
        await database.disconnect()

        stop = asyncio.Event()
        during = asyncio.create_task(hammer(web, str(ids[0]), answers, stop))
        outages = sized(1, 2)
        for _ in range(outages):
            await asyncio.sleep(0.5)
            await asyncio.to_thread(postgres.stop)
            down_since = sum(answers.values())
            await asyncio.sleep(sized(2.0, 4.0))
            assert sum(answers.values()) > down_since, "nothing was asked while Postgres was down"
            await asyncio.to_thread(postgres.start)
        await asyncio.sleep(1.0)
        stop.set()
        await during

        database = create_database(settings.database_url)
        await database.connect()
        try:
            created = [uuid.UUID(k.split()[1]) for k in answers if k.startswith("id ")]
            every = ids + created
            await wait_all(database, every, timeout=sized(60, 180))
            rows = await database.fetch_all(
                "SELECT id, input->>'message' AS message, result->>'message' AS result, "
                "retry_count FROM jobs"
            )
            assert {r._mapping["id"] for r in rows} == set(every), "a row no answer created"
            for row in rows:
                m = row._mapping
                assert m["result"] == m["message"] and m["retry_count"] == 0, m
            await check_effects(database, every)
        finally:
            await database.disconnect()
        assert (await web.get("/healthz")).status_code == 200
    assert worker.popen.poll() is None and web_proc.popen.poll() is None
    # uvicorn's access log line ends `HTTP/1.1" 500 Internal Server Error`; the app's own
    # handler of unexpected exceptions logs "unhandled error".
    assert '" 500 ' not in web_proc.output and "unhandled error" not in web_proc.output
    down = {k: v for k, v in answers.items() if " 503" in k}
    for endpoint in ("POST /proxy/process", "GET /proxy/status", "GET /healthz"):
        assert down.get(f"{endpoint} 503"), f"{endpoint} was never seen answering 503: {answers}"
    record(
        "postgres restart",
        jobs=len(ids) + answers["created"],
        restarts=outages,
        requests_while_restarting=sum(
            v for k, v in answers.items() if k.startswith(("GET", "POST"))
        ),
        answered_503=sum(down.values()),
        answered_500=0,
        statuses_lost=0,
    )


async def test_a_progress_write_that_fails_does_not_fail_the_run(
    settings, database: Database, servers
) -> None:
    """Progress is advisory: a Postgres that went away must not turn into a failed attempt.

    (It did: the handler's `report_progress` raised, the run counted as failed, and a job with
    one attempt ended `failed` because Postgres restarted under it.)
    """
    relay = Relay(servers.pg_port)
    await relay.start()
    relayed = create_database(
        settings.database_url.replace(f":{servers.pg_port}/", f":{relay.port}/")
    )
    await relayed.connect()
    try:
        context = RunContext(
            job_id=str(uuid.uuid4()),
            job_type="echo",
            shop=SHOP,
            attempt=1,
            run=1,
            database=relayed,
            owner="test",
        )
        await context.report_progress(10)
        await relay.cut()
        await context.report_progress(50)  # raised ConnectionDoesNotExistError / OSError
        await context.report_progress(100)
    finally:
        await relay.cut()
        await relayed.disconnect()
