"""Command-line tools: `python -m service shops add | db apply | sign | jobs enqueue | jobs show`.

python -m service shops add DOMAIN --token TOKEN [--scopes read_products,...]
python -m service db apply
python -m service sign --shop DOMAIN [--customer ID] [--base URL] PATH[?QUERY]
python -m service jobs enqueue TYPE --shop DOMAIN [--input JSON] [--delay SECONDS]
                                    [--idempotency-key KEY]
python -m service jobs show ID
python -m service jobs retry|cancel [--shop DOMAIN] [--type TYPE] [--status STATUS]
                                    [--created-after T] [--created-before T]
                                    [--finished-after T] [--finished-before T] [--dry-run]
python -m service shops pause|resume DOMAIN

`jobs retry` starts failed (not cancelled) jobs matching the filter over; `jobs cancel` cancels
the waiting ones (pending, retrying, suspended); both in batches of 500, and print
`{"action": ..., "matched" or "retried"/"cancelled": n}`; `--dry-run` only counts. Times are
ISO 8601 (a time without a zone is UTC).

`jobs enqueue` prints `{"jobId": ..., "status": ...}` as JSON on its last line; `jobs show`
prints the job as JSON. A refusal is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

from jobs.registry import job_types
from jobs.types import JobView
from service import queue, store
from service.core.db import DatabaseTlsError, create_database
from service.core.settings import DatabaseSettings, Settings, TokenSettings, load_settings
from service.core.states import JobStatus
from service.intake import Source
from service.jobs_client import EnqueueError, InvalidInput, JobsClient
from service.migrations import MIGRATIONS, MigrationError, apply_migrations
from service.shopify import shop_domain
from service.shopify.proxy_url import signed_proxy_url


async def _shops_add(domain: str, token: str, scopes: str) -> None:
    settings = load_settings(TokenSettings)
    database = create_database(settings.database_url, min_size=1, max_size=1)
    await database.connect()
    try:
        shop = await store.upsert_shop(
            database, domain, settings.token_cipher.encrypt(token), scopes
        )
    finally:
        await database.disconnect()
    print(f"shop {shop.domain} registered (id {shop.id})")


async def _db_apply() -> None:
    """Bring the database to the current schema (service/migrations), saying what it ran, one
    line per migration; then encrypt any token stored in clear when the keys are set."""
    database = create_database(load_settings(DatabaseSettings).database_url, min_size=1, max_size=1)
    try:
        await database.connect()
    except DatabaseTlsError as exc:
        raise SystemExit(f"shopjobs: {exc}") from None
    try:
        try:
            applied = await apply_migrations(database)
        except MigrationError as exc:
            raise SystemExit(f"shopjobs: {exc}") from None
        for migration in applied:
            print(f"applied {migration.label}")
        if not applied:
            print(f"schema up to date at {MIGRATIONS[-1].label}")
        keys = load_settings(TokenSettings) if os.environ.get("TOKEN_ENCRYPTION_KEYS") else None
        encrypted = (
            0 if keys is None else await store.encrypt_stored_tokens(database, keys.token_cipher)
        )
    finally:
        await database.disconnect()
    if encrypted:
        print(f"{encrypted} shops' tokens encrypted")


class CliError(Exception):
    """A refusal the CLI prints as one line, exiting 2."""


def _job_json(job: JobView) -> dict[str, Any]:
    return {
        "jobId": str(job.id),
        "type": job.type,
        "status": job.status,
        "progress": job.progress,
        "progressMessage": job.progress_message,
        "waiting": job.waiting,
        "paused": job.paused,
        "batch": job.children,  # a batch parent's children by status, as every reader shows
        "input": job.input,
        "result": job.result,
        "error": job.error,
        "attempts": job.attempts,
        "source": job.source,
        "idempotencyKey": job.idempotency_key,
        "runAt": job.run_at.isoformat() if job.run_at else None,
        "parentId": str(job.parent_id) if job.parent_id else None,
        "createdAt": job.created_at.isoformat(),
        "startedAt": job.started_at.isoformat() if job.started_at else None,
        "finishedAt": job.finished_at.isoformat() if job.finished_at else None,
    }


async def _jobs(args: argparse.Namespace) -> dict[str, Any]:
    """`jobs enqueue` / `show` / `event` through the app's own JobsClient; CliError on a
    refusal."""
    settings = load_settings(Settings)
    database = create_database(settings.database_url, min_size=1, max_size=2)
    redis = queue.connect(settings.redis_url)
    await database.connect()
    try:
        client = JobsClient(database, redis, job_types(settings))
        if args.command == "show":
            try:
                job = await client.get(UUID(args.job_id))
            except ValueError:
                raise CliError("malformed job id: expected a UUID") from None
            if job is None:
                raise CliError(f"job {args.job_id} not found")
            return _job_json(job)
        if args.command == "event":
            return await _send_event(client, args)
        if args.command in ("retry", "cancel"):
            return await _by_filter(client, args)
        try:
            job_input = orjson.loads(args.input)
        except orjson.JSONDecodeError:
            raise CliError("--input is not JSON") from None
        if not isinstance(job_input, dict):
            raise CliError("--input must be a JSON object")
        try:
            domain = shop_domain.normalize(args.shop)
            enqueued = await client.enqueue(
                args.type,
                shop=domain,
                input=job_input,
                delay=args.delay,
                idempotency_key=args.idempotency_key,
                source=Source.CLI,
            )
        except InvalidInput as exc:
            raise CliError(f"{exc.message}: " + orjson.dumps(exc.details).decode()) from None
        except (EnqueueError, ValueError) as exc:
            raise CliError(str(exc)) from None
        answer: dict[str, Any] = {"jobId": str(enqueued.id), "status": enqueued.status}
        if enqueued.run_at is not None:
            answer["runAt"] = enqueued.run_at.isoformat()
        return answer
    finally:
        await redis.aclose()
        await database.disconnect()


def _time(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{flag}: not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _by_filter(client: JobsClient, args: argparse.Namespace) -> dict[str, Any]:
    """`jobs retry` / `jobs cancel` by filter: counted first; acted on unless --dry-run."""
    if args.status is not None and args.status not in set(JobStatus):
        raise CliError("--status must be one of " + ", ".join(JobStatus))
    shop = None
    if args.shop is not None:
        try:
            shop = shop_domain.normalize(args.shop)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    filters = store.FlowFilter(
        shop=shop,
        job_type=args.type,
        status=JobStatus(args.status) if args.status else None,
        created_after=_time(args.created_after, "--created-after"),
        created_before=_time(args.created_before, "--created-before"),
        finished_after=_time(args.finished_after, "--finished-after"),
        finished_before=_time(args.finished_before, "--finished-before"),
    )
    matched = await store.count_matching(client.database, args.command, filters)
    if args.dry_run:
        return {"action": args.command, "filter": filters.describe(), "matched": matched}
    if args.command == "retry":
        done = await client.retry_matching(filters, Source.CLI, by="cli")
        return {"action": "retry", "filter": filters.describe(), "retried": done}
    done = await client.cancel_matching(filters, by="cli")
    return {"action": "cancel", "filter": filters.describe(), "cancelled": done}


async def _shops_pause(domain: str, pause: bool) -> None:
    settings = load_settings(Settings)
    database = create_database(settings.database_url, min_size=1, max_size=1)
    redis = queue.connect(settings.redis_url)
    await database.connect()
    try:
        client = JobsClient(database, redis, job_types(settings))
        if pause:
            await client.pause_shop(domain)
        else:
            await client.resume_shop(domain)
    finally:
        await redis.aclose()
        await database.disconnect()
    print(f"shop {domain} {'paused' if pause else 'resumed'}")


async def _send_event(client: JobsClient, args: argparse.Namespace) -> dict[str, Any]:
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError:
        raise CliError("--payload is not JSON") from None
    try:
        woken = await client.send_event(args.shop, args.name, payload)
    except (EnqueueError, ValueError) as exc:
        raise CliError(str(exc)) from None
    return {"event": args.name, "woken": woken}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service")
    commands = parser.add_subparsers(dest="area", required=True)

    shops = commands.add_parser("shops", help="manage installed shops")
    shops_cmd = shops.add_subparsers(dest="command", required=True)
    add = shops_cmd.add_parser("add", help="register a shop with an offline Admin API token")
    add.add_argument("domain")
    add.add_argument("--token", required=True)
    add.add_argument("--scopes", default="")
    for name, what in (("pause", "pause a shop's work"), ("resume", "resume a paused shop")):
        shops_cmd.add_parser(name, help=what).add_argument("domain")

    db = commands.add_parser("db", help="database schema")
    db_cmd = db.add_subparsers(dest="command", required=True)
    db_cmd.add_parser(
        "apply", help="apply the schema migrations it does not record yet (idempotent)"
    )

    sign = commands.add_parser("sign", help="print a signed app-proxy URL, for curl")
    sign.add_argument("path", help="proxy path and query, e.g. /proxy/status?jobId=...")
    sign.add_argument("--shop", required=True)
    sign.add_argument("--customer", default="", help="logged_in_customer_id (blank: anonymous)")
    sign.add_argument("--base", default=None, help="app URL (default SHOPIFY_APP_URL)")
    sign.add_argument("--path-prefix", default="/apps/jobs")

    jobs = commands.add_parser("jobs", help="start and inspect jobs")
    jobs_cmd = jobs.add_subparsers(dest="command", required=True)
    enqueue = jobs_cmd.add_parser("enqueue", help="create a job, as the app's own code does")
    enqueue.add_argument("type")
    enqueue.add_argument("--shop", required=True)
    enqueue.add_argument("--input", default="{}", help="the job's input, a JSON object")
    enqueue.add_argument("--delay", type=float, default=None, help="seconds before it is due")
    enqueue.add_argument("--idempotency-key", default=None)
    show = jobs_cmd.add_parser("show", help="print a job as JSON")
    show.add_argument("job_id")
    event = jobs_cmd.add_parser(
        "event", help="send an event to a shop's jobs (ctx.wait_for_event), as the app's code does"
    )
    event.add_argument("name")
    event.add_argument("--shop", required=True)
    event.add_argument("--payload", default="null", help="the event's payload, JSON")
    for name, what in (
        ("retry", "start failed jobs matching a filter over (cancelled ones excluded)"),
        ("cancel", "cancel waiting jobs (pending, retrying, suspended) matching a filter"),
    ):
        bulk = jobs_cmd.add_parser(name, help=what)
        bulk.add_argument("--shop", default=None, help="the shop's domain, exactly")
        bulk.add_argument("--type", default=None)
        bulk.add_argument("--status", default=None)
        for flag in ("--created-after", "--created-before", "--finished-after",
                     "--finished-before"):  # fmt: skip
            bulk.add_argument(flag, default=None, help="ISO 8601 time (UTC if no zone)")
        bulk.add_argument("--dry-run", action="store_true", help="print the count, do nothing")

    args = parser.parse_args(argv)
    if args.area == "jobs":
        # The CLI says how the command ended, in one line; the enqueue path's warnings (meant
        # for the web's log: "job ... could not be queued") would only add a second.
        logging.disable(logging.WARNING)
        try:
            answer = asyncio.run(_jobs(args))
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # Postgres or Redis unreachable: one line, not a traceback
            print(f"error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
            return 2
        print(orjson.dumps(answer).decode())
        return 0
    if args.area == "shops":
        try:
            domain = shop_domain.normalize(args.domain)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.command == "add":
            asyncio.run(_shops_add(domain, args.token, args.scopes))
        else:
            try:
                asyncio.run(_shops_pause(domain, args.command == "pause"))
            except EnqueueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
    elif args.area == "db":
        asyncio.run(_db_apply())
    elif args.area == "sign":
        settings = load_settings(Settings)
        try:
            domain = shop_domain.normalize(args.shop)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            signed_proxy_url(
                args.base or settings.shopify_app_url,
                args.path,
                shop=domain,
                secret=settings.shopify_api_secret.get_secret_value(),
                customer_id=args.customer,
                path_prefix=args.path_prefix,
                timestamp=int(time.time()),
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
