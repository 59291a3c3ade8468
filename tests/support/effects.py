"""The fault suite's countable side effects: a test-only `echo` whose runs leave a row each.

The product's `echo` (jobs/builtin/echo.py) has no side effect. The fault suite runs this one in
its place, under the same name, so its jobs are made and read as any echo job's: the input
gains `record_effect`, and the handler, after echo's work, as its last act before returning,
writes one row to `echo_effects` (a table only the tests create):

- `with_completion`: written through `ctx.on_completion`, in the transaction that marks the
  job completed, so it happens exactly once per completed job and never for one that is not;
- `before_completion`: written on its own at once, as a call to another system (the Admin
  API) would be. At least once: a run killed after the effect and before its completion is
  recorded runs again and repeats it.

The web and worker processes pick it up when started through this module:
`python -m tests.support.effects uvicorn service.app:app ...` or `python -m tests.support.effects arq
jobs.WorkerSettings` (see `effects_command`).
"""

from __future__ import annotations

import functools
import runpy
import sys
from typing import Literal
from uuid import UUID

import asyncpg
from databases import Database

import jobs.registry
from jobs.builtin.echo import EchoInput, echo
from jobs.types import JobContext, JobType
from service.core.settings import Settings

# One row per effect. Deliberately no unique key on job_id: a duplicate must be countable, not
# silently refused. `run` is jobs.attempts of the run that wrote it (every start counts, crash
# re-runs included).
TABLE_NAME = "echo_effects"
EFFECTS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE_NAME} (
    id              bigserial PRIMARY KEY,
    job_id          uuid NOT NULL,
    run             integer NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('with_completion', 'before_completion')),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS echo_effects_job_idx ON {TABLE_NAME} (job_id);
"""

Mode = Literal["with_completion", "before_completion"]


async def create_effects_table(database: Database) -> None:
    """Create `echo_effects` if it is not there (schema.sql drops it, as no product code uses
    it: every test database gets it back through the `database` fixture)."""
    async with database.connection() as connection:
        await connection.raw_connection.execute(EFFECTS_TABLE)


async def insert_effect(connection: asyncpg.Connection, job_id: UUID, run: int, mode: Mode) -> None:
    await connection.execute(
        "INSERT INTO echo_effects (job_id, run, mode) VALUES ($1, $2, $3)", job_id, run, mode
    )


async def record_effect(database: Database, job_id: UUID, run: int, mode: Mode) -> None:
    """An effect written on its own, as a call to another system would be: not undone if the
    run then dies before its completion is recorded."""
    async with database.connection() as connection:
        await insert_effect(connection.raw_connection, job_id, run, mode)


class EffectEchoInput(EchoInput):
    record_effect: Mode | None = None


async def effect_echo(ctx: JobContext, data: EffectEchoInput) -> dict[str, str]:
    result = await echo(ctx, data)
    if data.record_effect == "with_completion":
        ctx.on_completion(
            functools.partial(
                insert_effect, job_id=UUID(ctx.job_id), run=ctx.run, mode=data.record_effect
            )
        )
    elif data.record_effect == "before_completion":
        await record_effect(ctx.database, UUID(ctx.job_id), ctx.run, data.record_effect)
    return result


JOB_TYPE = JobType(name="echo", input_model=EffectEchoInput, handler=effect_echo, proxy=True)

_product_job_types = jobs.registry.job_types


def job_types(settings: Settings) -> dict[str, JobType]:
    """The deployment's job types, with this `echo` in place of the product's."""
    types = _product_job_types(settings)
    if JOB_TYPE.name in types:
        types[JOB_TYPE.name] = JOB_TYPE
    return types


def effects_command(command: list[str]) -> list[str]:
    """A `python -m <module> ...` command, run with the effect-writing `echo` registered."""
    python, flag, *rest = command
    assert flag == "-m", command
    return [python, "-m", "tests.support.effects", *rest]


if __name__ == "__main__":
    # Before the web or the worker imports `job_types` from the registry, so both get this one.
    jobs.registry.job_types = job_types
    module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
