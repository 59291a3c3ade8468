"""The Postgres connection (the `databases` package over asyncpg) and schema application."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import databases
from databases.core import Connection

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema.sql"
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

    `databases` keeps one connection wrapper per asyncio task, and two of its error paths
    leave that wrapper holding a connection asyncpg has given up on: a release that fails,
    and a transaction whose ROLLBACK (or COMMIT) fails on a dead connection. Every later query
    of that task then fails ("Connection is already acquired", "connection has been released
    back to the pool", "connection is closed") for as long as the task lives, the worker's
    poll loop included; and the pool slot it holds is never returned. Outside a transaction,
    such a wrapper is dropped here, its connection handed back to the pool, and the task gets
    a fresh one.
    """

    def connection(self) -> Connection:
        connection = super().connection()
        if not connection._transaction_stack and _stranded(connection):
            held = connection._connection._connection
            if getattr(held, "_con", None) is not None:
                # Give the slot back (asyncpg terminates a closed connection as it does so).
                task = asyncio.ensure_future(self._backend._pool.release(held))
                _returning.add(task)
                task.add_done_callback(_returned)
            self._connection = None  # forget this task's stuck wrapper
            connection = super().connection()
        return connection


_returning: set[asyncio.Future[object]] = set()


def _returned(task: asyncio.Future[object]) -> None:
    _returning.discard(task)
    if not task.cancelled():
        task.exception()  # already handled: asyncpg terminated the connection


def _stranded(connection: Connection) -> bool:
    """Whether a wrapper holds a connection it can no longer use."""
    held = getattr(connection._connection, "_connection", None)  # asyncpg's pool proxy
    if held is None:
        return False
    if connection._connection_counter == 0:
        return True  # its release failed half-way
    if getattr(held, "_con", None) is None:
        return True  # released back to the pool (asyncpg detaches the proxy)
    return bool(held.is_closed())


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
