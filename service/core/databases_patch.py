"""The one place that touches private internals of `databases` (and of asyncpg under it).

`databases` is archived upstream and pinned exactly (pyproject.toml: `databases[asyncpg]==`
PATCHED_VERSION). It keeps one connection wrapper per asyncio task, and two of its error paths
leave that wrapper holding a connection asyncpg has given up on: a release that fails, and a
transaction whose ROLLBACK (or COMMIT) fails on a dead connection. Every later query of that
task then fails ("Connection is already acquired", "connection has been released back to the
pool", "connection is closed") for as long as the task lives, the worker's poll loop included;
and the pool slot it holds is never returned. `StrandedConnectionGuard.connection()` drops
such a wrapper (outside a transaction), hands its connection back to the pool, and gives the
task a fresh one.

What it reads and writes that is not public: `Database._connection` (the per-task wrapper, a
property with a setter), `Database._backend._pool` (asyncpg's pool), `Connection.
_transaction_stack`, `Connection._connection_counter`, `Connection._connection._connection`
(asyncpg's pool proxy) and that proxy's `_con`. `private_api_problems()` checks each one is
still there, and tests/unit/test_databases_patch.py fails, naming this module, when they are
not or when the installed version is not PATCHED_VERSION: read the new version's source before
moving the pin.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version

import asyncpg.pool
import databases
from databases.backends.postgres import PostgresBackend, PostgresConnection
from databases.core import Connection

# The release whose source this patch was written against.
PATCHED_VERSION = "0.9.0"


class StrandedConnectionGuard(databases.Database):
    """`databases.Database`, without the trap it sets when Postgres drops a connection."""

    def connection(self) -> Connection:
        connection = super().connection()
        if not connection._transaction_stack and _stranded(connection):
            held = connection._connection._connection  # type: ignore[attr-defined]  # asyncpg's backend connection, not in ConnectionBackend's type
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


def private_api_problems() -> list[str]:
    """What this patch relies on that the installed packages no longer have (empty: all)."""
    problems = []
    installed = version("databases")
    if installed != PATCHED_VERSION:
        problems.append(f"databases {installed} is installed; the patch is for {PATCHED_VERSION}")
    wrapper = inspect.getattr_static(databases.Database, "_connection", None)
    if not (isinstance(wrapper, property) and wrapper.fset is not None):
        problems.append("databases.Database._connection is no longer a settable property")
    backend = PostgresBackend("postgresql://localhost/patch-check")
    if not hasattr(backend, "_pool"):
        problems.append("PostgresBackend has no _pool")
    connection = Connection(databases.Database("postgresql://localhost/patch-check"), backend)
    for name in ("_transaction_stack", "_connection_counter", "_connection"):
        if not hasattr(connection, name):
            problems.append(f"databases.core.Connection has no {name}")
    if not isinstance(getattr(connection, "_connection", None), PostgresConnection) or not hasattr(
        connection._connection, "_connection"
    ):
        problems.append("PostgresConnection no longer holds asyncpg's connection as _connection")
    if "_con" not in getattr(asyncpg.pool.PoolConnectionProxy, "__slots__", ()):
        problems.append("asyncpg's PoolConnectionProxy has no _con")
    return problems
