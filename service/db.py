"""The Postgres connection (the `databases` package over asyncpg) and schema application."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from databases import Database

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.sql"
# Any constant: serialises concurrent `make db` / release commands.
SCHEMA_LOCK_ID = 7_331_001

# What a refused, lost or shutting-down Postgres raises (asyncpg, or the socket under it;
# OSError includes TimeoutError). Request handlers answer 503 for these, never 500.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
)


def create_database(url: str, *, min_size: int = 1, max_size: int = 10) -> Database:
    return Database(url, min_size=min_size, max_size=max_size, command_timeout=30)


async def apply_schema(database: Database, schema_path: Path = SCHEMA_PATH) -> None:
    """Apply schema.sql in one transaction; every statement in it is idempotent."""
    sql = schema_path.read_text()
    async with database.connection() as connection:
        raw = connection.raw_connection
        async with raw.transaction():
            await raw.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_ID})")
            await raw.execute(sql)
