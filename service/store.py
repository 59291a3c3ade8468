"""Every SQL statement the project runs against shops and jobs, in one place.

Functions take the `databases.Database` they act on; nothing else in the tree writes SQL for
these tables, so a reader reviews all of it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from databases import Database


@dataclass(frozen=True)
class Shop:
    id: int
    domain: str
    access_token: str | None
    scopes: str
    uninstalled_at: datetime | None

    @property
    def installed(self) -> bool:
        return self.uninstalled_at is None


def _shop(row: object) -> Shop | None:
    if row is None:
        return None
    m = row._mapping  # type: ignore[attr-defined]
    return Shop(
        id=m["id"],
        domain=m["domain"],
        access_token=m["access_token"],
        scopes=m["scopes"],
        uninstalled_at=m["uninstalled_at"],
    )


# -- shops -------------------------------------------------------------------------------


async def upsert_shop(database: Database, domain: str, access_token: str, scopes: str) -> Shop:
    """Register (or re-install) a shop with an offline Admin API token."""
    row = await database.fetch_one(
        """
        INSERT INTO shops (domain, access_token, scopes)
        VALUES (:domain, :token, :scopes)
        ON CONFLICT (domain) DO UPDATE
            SET access_token = EXCLUDED.access_token, scopes = EXCLUDED.scopes,
                uninstalled_at = NULL, updated_at = now()
        RETURNING id, domain, access_token, scopes, uninstalled_at
        """,
        {"domain": domain, "token": access_token, "scopes": scopes},
    )
    shop = _shop(row)
    assert shop is not None
    return shop


async def get_shop(database: Database, domain: str) -> Shop | None:
    row = await database.fetch_one(
        "SELECT id, domain, access_token, scopes, uninstalled_at FROM shops WHERE domain = :d",
        {"d": domain},
    )
    return _shop(row)


# -- jobs ---------------------------------------------------------------------------------
