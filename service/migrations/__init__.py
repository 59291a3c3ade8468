"""The schema's history: numbered SQL migrations, applied in order, each recorded once.

Every database, empty or made by any release, reaches the current schema by the same path:
`make db` (`python -m service db apply`, the deploy's release command) runs the migrations
in this folder that its `schema_migrations` table does not record yet, in version order, each
in a transaction of its own that also records it. A failed migration leaves nothing behind,
neither its changes nor its record, and the ones before it stay applied. Concurrent appliers
(the web's and the worker's release commands) take turns on one advisory lock, and each
re-reads the record under it, so every migration runs exactly once.

`0001_baseline.sql` is the schema as release 120a921 left it, written idempotently: databases
made before this history began record no version, and it upgrades them in place. The
top-level `schema.sql` is the whole current schema for reading (one `CREATE TABLE` per table);
it is not applied by anything but the test that proves it equal to a migrated database
(tests/integration/test_schema.py).

To change the schema, add migration 0002 (then 0003, ...):
1. Write `service/migrations/0002_<what_it_does>.sql`: plain SQL (no `IF NOT EXISTS` needed:
   it runs once, after 0001), in Postgres' own words, reviewed as SQL. No `BEGIN`/`COMMIT`:
   the runner wraps it in its transaction, so nothing that refuses a transaction block
   (`CREATE INDEX CONCURRENTLY`, `VACUUM`).
2. Make the same change to `schema.sql`, inside the table's one `CREATE TABLE` (a column added
   by `ALTER TABLE ... ADD COLUMN` goes last in it, where Postgres puts it).
3. Run `tests/integration/test_schema.py`: a fresh database from `schema.sql` must equal one
   migrated from empty and from each earlier release, column order included.
4. Expand only: add, never drop, rename or rewrite what the previous release reads or writes;
   the release command runs this while that release's processes still serve (the deploy
   order and the rule: docs/deploy.md, docs/upgrading.md). Drop it a release later.
Never edit or renumber a migration a release has shipped: databases that recorded it will not
run it again, and `apply_migrations` refuses a database whose record names it otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from service.core.db import Database

FOLDER = Path(__file__).resolve().parent
# Any constant: serialises concurrent `make db` / release commands.
SCHEMA_LOCK_ID = 7_331_001
FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version         integer PRIMARY KEY,
    name            text NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One file of this folder: `0002_job_waits.sql` is version 2, named `job_waits`."""

    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


class MigrationError(Exception):
    """The migrations on disk, or the database's record of them, do not add up."""


def load(folder: Path = FOLDER) -> tuple[Migration, ...]:
    """The folder's migrations in version order, numbered 1, 2, 3... with no gap or repeat.

    A gap or a repeat is what two branches each adding "the next" migration leave behind; a
    `.sql` file that is not `NNNN_name.sql` would be silently skipped. Both fail here, at the
    first `make db` or test, rather than in a deploy.
    """
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: a migration is named NNNN_lower_case_name.sql")
        migrations.append(Migration(int(match["version"]), match["name"], path.read_text()))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migrations must be numbered 1, 2, 3... in {folder}: {versions}")
    return tuple(migrations)


MIGRATIONS = load()


async def apply_migrations(
    database: Database, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[Migration]:
    """Apply the migrations the database does not record yet, in order; return those applied.

    A version the database records under another name means the files were renumbered or
    two branches shipped the same number: refused (MigrationError) before anything runs.
    Versions recorded beyond the last one known here (a newer release's, when an older one is
    deployed again) are left as they are.
    """
    applied: list[Migration] = []
    async with database.connection() as connection:
        raw = connection.raw_connection
        async with raw.transaction():
            await raw.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_ID})")
            await raw.execute(VERSION_TABLE)
            recorded = dict(await raw.fetch("SELECT version, name FROM schema_migrations"))
        for migration in migrations:
            name = recorded.get(migration.version)
            if name is not None and name != migration.name:
                raise MigrationError(
                    f"the database records migration {migration.version} as {name!r}, "
                    f"this release names it {migration.label}"
                )
        for migration in migrations:
            if migration.version in recorded:
                continue
            async with raw.transaction():
                await raw.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_ID})")
                # Another applier may have run it while this one waited for the lock.
                if await raw.fetchval(
                    "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
                ):
                    continue
                await raw.execute(migration.sql)
                await raw.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied.append(migration)
    return applied
