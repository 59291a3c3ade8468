"""REDIS_URL's TLS options, read once: what settings check at start and the queue connects with."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

CERT_REQS = ("none", "optional", "required")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def tls_options(url: str) -> dict[str, Any]:
    """RedisSettings' TLS fields for `rediss://`: the certificate and the host name are checked.

    arq's `from_dsn` reads only the scheme, and redis-py on its own checks the certificate but
    not the name in it, so any certificate from a public CA would do. The URL may relax this
    explicitly: `ssl_cert_reqs=none` (no check at all: encryption only) or `optional`,
    `ssl_check_hostname=false`; `ssl_ca_certs=/path/ca.pem` trusts a private CA instead of
    the system's roots.
    """
    if not url.startswith("rediss://"):
        return {}
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    cert_reqs = query.get("ssl_cert_reqs", "required").lower()
    if cert_reqs not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}")
    check_hostname = cert_reqs != "none"
    if "ssl_check_hostname" in query:
        flag = query["ssl_check_hostname"].lower()
        if flag not in _TRUE + _FALSE:
            raise ValueError("ssl_check_hostname must be true or false")
        check_hostname = flag in _TRUE
        if check_hostname and cert_reqs == "none":
            raise ValueError("ssl_check_hostname=true needs a certificate (ssl_cert_reqs)")
    return {
        "ssl_cert_reqs": cert_reqs,
        "ssl_ca_certs": query.get("ssl_ca_certs") or None,
        "ssl_check_hostname": check_hostname,
    }
