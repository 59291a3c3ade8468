"""The Postgres connection (the `databases` package over asyncpg).

The schema and its upgrades are service/migrations. The patch of `databases`' private
internals (a task's stranded connection) is kept apart, in service/core/databases_patch.py,
with the test that guards it.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from service.core.databases_patch import StrandedConnectionGuard

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


class Database(StrandedConnectionGuard):
    """`databases.Database` that recovers a task's stranded connection (databases_patch.py)
    and names a TLS failure in one line."""

    tls_required = False

    async def connect(self) -> None:
        """Connect, naming a TLS failure in one line (DatabaseTlsError) when TLS was required."""
        try:
            await super().connect()
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise DatabaseTlsError(f"postgres: TLS handshake failed: {_reason(exc)}") from None
        except ConnectionError as exc:
            if self.tls_required and "SSL" in str(exc):
                raise DatabaseTlsError(
                    "postgres: the server does not offer TLS, which DATABASE_URL's sslmode "
                    "requires; no connection was made"
                ) from None
            raise


def _reason(exc: Exception) -> str:
    return getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)


class DatabaseTlsError(Exception):
    """The connection's TLS, as DATABASE_URL's sslmode asks for it, could not be had.

    A configuration problem, not an outage: the web and the worker stop with this one line
    rather than retry, and nothing was sent in plaintext.
    """


SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Our own names for what `databases` would otherwise drop without a word (only its own
# `ssl`, `min_size` and `max_size` reach asyncpg).
_TLS_PARAMETERS = ("sslmode", "sslrootcert")


def tls_argument(url: str) -> tuple[str, ssl.SSLContext | str | None]:
    """DATABASE_URL without its sslmode/sslrootcert, and asyncpg's `ssl=` for them.

    Modes follow libpq: `disable`, `allow` and `prefer` may end in plaintext; `require`
    encrypts without checking the certificate; `verify-ca` checks it against `sslrootcert`
    (or the system's roots) but not the host name; `verify-full` checks both. No sslmode
    leaves asyncpg's own default (`prefer`). None: the URL says nothing.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {key: value for key, value in query if key in _TLS_PARAMETERS}
    rest = urlencode([(key, value) for key, value in query if key not in _TLS_PARAMETERS])
    stripped = urlunsplit(parts._replace(query=rest))
    mode = options.get("sslmode")
    if mode is None:
        if "sslrootcert" in options:
            raise ValueError("sslrootcert needs sslmode=verify-ca or verify-full")
        return stripped, None
    if mode not in SSLMODES:
        raise ValueError(f"sslmode must be one of {', '.join(SSLMODES)}, not {mode!r}")
    if not mode.startswith("verify-"):
        return stripped, mode
    context = ssl.create_default_context(cafile=options.get("sslrootcert") or None)
    context.check_hostname = mode == "verify-full"
    context.verify_mode = ssl.CERT_REQUIRED
    return stripped, context


def create_database(url: str, *, min_size: int = 1, max_size: int = 10) -> Database:
    stripped, tls = tls_argument(url)
    options: dict[str, Any] = {} if tls is None else {"ssl": tls}
    database = Database(
        stripped,
        min_size=min_size,
        max_size=max_size,
        command_timeout=30,
        reset=_keep_session,
        **options,
    )
    database.tls_required = tls not in (None, "disable", "allow", "prefer")
    return database
