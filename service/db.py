"""The Postgres connection (the `databases` package over asyncpg) and schema application."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import databases
from databases.core import Connection

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.sql"
# Any constant: serialises concurrent `make db` / release commands.
SCHEMA_LOCK_ID = 7_331_001

# What a refused, lost or shutting-down Postgres raises (asyncpg, or the socket under it;
# OSError includes TimeoutError). Request handlers answer 503 for these, never 500.
# InternalClientError: a connection Postgres dropped mid-use can be handed to the next query
# before asyncpg has noticed, which then fails with "cannot switch to state ...".
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.InternalClientError,
)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a pooled connection without asyncpg's reset query.

    By default asyncpg sends `RESET ALL; UNLISTEN *; CLOSE ALL; ...` on every release: a second
    round trip for every one-statement query. Nothing here leaves session state behind (no
    SET, LISTEN, cursors or session advisory locks; transactions are always closed, and asyncpg
    still rolls back one that is not), so there is nothing to reset.
    """


class Database(databases.Database):
    """`databases.Database`, without the trap it sets when Postgres drops a connection.

    `databases` keeps one connection wrapper per asyncio task. When handing its connection
    back to the pool fails (Postgres dropped it between a query and its release; asyncpg then
    discards the connection), the wrapper stays marked as holding one, and every later query
    of that task fails with "Connection is already acquired", for as long as the task lives:
    the worker's poll loop would never claim a job again. Such a wrapper is dropped here, and
    the task gets a fresh one.
    """

    def connection(self) -> Connection:
        connection = super().connection()
        backend = connection._connection
        if connection._connection_counter == 0 and getattr(backend, "_connection", None):
            self._connection = None  # forget this task's stuck wrapper
            connection = super().connection()
        return connection


def create_database(url: str, *, min_size: int = 1, max_size: int = 10) -> Database:
    return Database(
        url, min_size=min_size, max_size=max_size, command_timeout=30, reset=_keep_session
    )


async def apply_schema(database: Database, schema_path: Path = SCHEMA_PATH) -> None:
    """Apply schema.sql in one transaction; every statement in it is idempotent."""
    sql = schema_path.read_text()
    async with database.connection() as connection:
        raw = connection.raw_connection
        async with raw.transaction():
            await raw.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_ID})")
            await raw.execute(sql)
