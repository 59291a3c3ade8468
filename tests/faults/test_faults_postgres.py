"""Fault suite: Postgres restarted mid-run loses no status, and the real web process answers 503,
never 500, while it is down (issue 8). Sizes: tests/support/faults.py."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import Counter

import httpx
import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from databases import Database

from jobs.worker.context import RunContext
from service.core.db import create_database
from tests.support.breakable import PostgresControl, Relay
from tests.support.effects import create_effects_table
from tests.support.faults import (
    check_effects,
    effects_by_job,
    record,
    signed,
    sized,
    start_web,
    start_worker,
    wait_completed,
    wait_until,
)
from tests.support.jobs import add_job, make_shop, wait_all, wait_for_status
from tests.support.net import free_port

SHOP = "pg-restart.myshopify.com"


def echo(i: int, rng: random.Random, *, effect: bool = True) -> dict[str, object]:
    """An echo job's request; with `effect`, for the fault suite's echo (tests/support/effects.py)."""
    sleep_ms = rng.randint(*sized((200, 800), (500, 2500))) if rng.random() < 0.6 else 0
    job_input: dict[str, object] = {"message": f"pg-{i}", "sleep_ms": sleep_ms}
    if effect:
        job_input["record_effect"] = "with_completion" if i % 2 else "before_completion"
    return {"type": "echo", "input": job_input}


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
    await create_effects_table(database)
    await database.execute("TRUNCATE shops, jobs, echo_effects RESTART IDENTITY CASCADE")
    await make_shop(database, SHOP)
    workers = [
        start_worker(
            spawn,
            {**env, "WORKER_HEALTH_PORT": str(free_port())},
            worker_concurrency=sized(4, 10),
            job_max_attempts=3,
        )
        for _ in range(2)
    ]
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
        try:
            for _ in range(outages):
                await asyncio.sleep(0.5)
                await asyncio.to_thread(postgres.stop)
                down_since = sum(answers.values())
                await asyncio.sleep(sized(2.0, 4.0))
                if during.done():
                    during.result()  # the answer it choked on
                assert sum(answers.values()) > down_since, "nothing asked while Postgres was down"
                await asyncio.to_thread(postgres.start)
        finally:
            if not postgres.running():  # every later test needs it
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
                "input->>'record_effect' AS mode, retry_count, status FROM jobs"
            )
            statuses_lost = len(every) - sum(r._mapping["status"] == "completed" for r in rows)
            assert {r._mapping["id"] for r in rows} == set(every), "a row no answer created"
            retried = 0
            for row in rows:
                m = row._mapping
                assert m["result"] == m["message"], m
                if m["mode"] == "with_completion":
                    # Its handler never touches Postgres: the outage cost it no attempt.
                    assert m["retry_count"] == 0, m
                else:
                    # Its handler writes its effect itself, and that write may fail like any
                    # call to another system: a failed attempt, retried.
                    retried += m["retry_count"]
            # No run was interrupted: an effect is repeated only by the retry of an attempt
            # whose effect was written but not acknowledged (the connection dropped at commit).
            assert await check_effects(database, every) <= retried
        finally:
            await database.disconnect()
        assert (await web.get("/healthz")).status_code == 200
    assert all(w.popen.poll() is None for w in workers) and web_proc.popen.poll() is None
    # The request log line is `POST /proxy/process 500 1.2ms`; the app's own handler of
    # unexpected exceptions logs "unhandled error".
    assert not re.search(r" 500 [0-9.]+ms", web_proc.output), web_proc.output[-3000:]
    assert "unhandled error" not in web_proc.output
    down = {k: v for k, v in answers.items() if " 503" in k}
    for endpoint in ("POST /proxy/process", "GET /proxy/status", "GET /healthz"):
        assert down.get(f"{endpoint} 503"), f"{endpoint} was never seen answering 503: {answers}"
    record(
        "postgres restart",
        jobs=len(ids) + answers["created"],
        workers=len(workers),
        restarts=outages,
        requests_while_restarting=sum(
            v for k, v in answers.items() if k.startswith(("GET", "POST"))
        ),
        answered_503=sum(down.values()),
        answered_500=sum(v for k, v in answers.items() if k.endswith(" 500")),
        statuses_lost=statuses_lost,
        attempts_failed_by_the_outage=retried,
    )


async def test_a_progress_write_that_fails_does_not_fail_the_run(
    settings, database: Database, servers
) -> None:
    """Progress is advisory: a Postgres that went away must not turn into a failed attempt.

    (It did: the handler's `report_progress` raised, the run counted as failed, and a job with
    one attempt ended `failed` because Postgres restarted under it.)
    """
    shop = await make_shop(database, SHOP)
    job_id = await add_job(database, None, shop, {"message": "x"}, enqueue=False)  # type: ignore[arg-type]
    await database.execute(
        "UPDATE jobs SET status = 'processing', lease_owner = 'test' WHERE id = :id", {"id": job_id}
    )
    relay = Relay(servers.pg_port)
    await relay.start()
    relayed = create_database(
        settings.database_url.replace(f":{servers.pg_port}/", f":{relay.port}/")
    )
    await relayed.connect()
    try:
        context = RunContext(
            job_id=str(job_id),
            job_type="echo",
            shop=SHOP,
            attempt=1,
            run=1,
            database=relayed,
            owner="test",
        )
        await context.report_progress(10, "started")
        assert (await wait_for_status(database, job_id, {"processing"})).progress == 10
        await relay.cut()
        # Each raised ConnectionDoesNotExistError / OSError into the handler before.
        assert await context.report_progress(50, "half") is None
        assert await context.report_progress(100) is None
    finally:
        await relay.cut()
        await relayed.disconnect()
    job = await wait_for_status(database, job_id, {"processing"})
    # Neither report reached Postgres, and neither touched the run's state there.
    assert (job.progress, job.status, job.lease_owner) == (10, "processing", "test")


REFUSE = [
    "CREATE TABLE IF NOT EXISTS faults_refuse (since timestamptz)",
    """CREATE OR REPLACE FUNCTION faults_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           -- 57P01 admin_shutdown: what a Postgres shutting down answers (an unavailable
           -- Postgres, whose writes are retried; any other error fails the job at once).
           IF EXISTS (SELECT 1 FROM faults_refuse) THEN
               RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'admin_shutdown';
           END IF;
           RETURN NEW;
       END $$""",
    """CREATE TRIGGER faults_refuse_completion BEFORE UPDATE ON jobs FOR EACH ROW
           WHEN (NEW.status = 'completed' AND OLD.status = 'processing')
           EXECUTE FUNCTION faults_refuse()""",
]
UNREFUSE = [
    "DROP TRIGGER IF EXISTS faults_refuse_completion ON jobs",
    "DROP FUNCTION IF EXISTS faults_refuse()",
    "DROP TABLE IF EXISTS faults_refuse",
]


async def run_sql(database: Database, statements: list[str]) -> None:
    for statement in statements:
        await database.execute(statement)


@pytest.mark.parametrize(
    ("workers", "key_lost"), [(2, False), (1, True)], ids=["other-worker", "same-worker"]
)
async def test_a_run_whose_outcome_cannot_be_written_yet_is_not_started_again(
    workers: int, key_lost: bool, env, spawn, database: Database, redis: ArqRedis
) -> None:
    """Postgres refuses a finished run's completion for three leases (as while it restarts).

    The job is still that run's until its outcome is written: no worker may start it again,
    neither another one (its in-progress key must stay alive meanwhile) nor the same one (if
    the key is lost anyway, a Redis restart say). Before the fixes both did, and the handler's
    effect happened twice.
    """
    lease = 2
    for _ in range(workers):
        start_worker(
            spawn, {**env, "WORKER_HEALTH_PORT": str(free_port())}, job_lease_seconds=lease
        )
    shop = await make_shop(database)
    try:
        await run_sql(database, REFUSE)
        await database.execute("INSERT INTO faults_refuse VALUES (now())")
        job_id = await add_job(
            database, redis, shop, {"message": "once", "record_effect": "before_completion"}
        )

        async def effect_written() -> bool:
            return bool(await effects_by_job(database))

        await wait_until(effect_written, 20, "the run's effect")
        deadline = time.monotonic() + 3 * lease
        while time.monotonic() < deadline:
            if key_lost:
                await redis.delete(in_progress_key_prefix + str(job_id))
            await asyncio.sleep(0.1)
    finally:
        await run_sql(database, UNREFUSE)
    job = await wait_for_status(database, job_id, {"completed"}, timeout=30)
    assert await effects_by_job(database) == {job_id: [(1, "before_completion")]}
    assert job.attempts == 1


async def test_the_web_answers_503_not_500_while_its_connections_are_killed(
    app_client: httpx.AsyncClient, database: Database, settings
) -> None:
    """Every connection of the web killed, over and over, under concurrent requests.

    Two defects showed here. A connection Postgres drops mid-use can be handed to the next
    request before asyncpg has noticed: that request's query failed with asyncpg's
    InternalClientError ("cannot switch to state 12; another operation is in progress"), a
    500. And an INSERT whose connection died just after the commit lost its answer: the
    caller got 503 but the row stayed, for the reconciler to run later (about one such row
    for every ten requests here).
    """
    shop = await make_shop(database, SHOP)
    made = await app_client.post(
        signed("/proxy/process", SHOP), json=echo(0, random.Random(1), effect=False)
    )
    job_id = made.json()["jobId"]
    answers: Counter[int] = Counter()
    stop = asyncio.Event()

    async def ask() -> None:
        while not stop.is_set():
            status = await app_client.get(signed(f"/proxy/status?jobId={job_id}", SHOP))
            created = await app_client.post(
                signed("/proxy/process", SHOP), json=echo(1, random.Random(2), effect=False)
            )
            for answer in (status, created):
                answers[answer.status_code] += 1
                assert answer.status_code in (200, 503), answer.text
            if created.status_code == 200:
                answers["created"] += 1

    killer = create_database(settings.database_url, max_size=1)  # one connection: spared below
    await killer.connect()
    askers = [asyncio.create_task(ask()) for _ in range(8)]
    try:
        deadline = time.monotonic() + sized(3, 10)
        while time.monotonic() < deadline and not any(a.done() for a in askers):
            await killer.fetch_all(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND datname = current_database()"
            )
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(*askers)
        await killer.disconnect()
    assert answers[503] and answers["created"], answers
    assert shop.installed
    # A 503 leaves no row, even when the connection died just after the INSERT committed.
    rows = await database.fetch_val("SELECT count(*) FROM jobs")
    assert rows == answers["created"] + 1
    record(
        "web under killed connections",
        requests=sum(v for k, v in answers.items() if isinstance(k, int)),
        answered_500=answers[500],
        rows_left_by_a_503=rows - answers["created"] - 1,
    )
