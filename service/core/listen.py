"""The listening socket of the private servers (the web's metrics, the worker's health server).

`"::"` (the default of WEB_METRICS_HOST and WORKER_HEALTH_HOST) is one dual-stack socket: every
IPv6 address and, through IPv4-mapped addresses, every IPv4 one, so a scraper on Fly's private
IPv6 network and one on 127.0.0.1 both reach it. asyncio itself makes IPv6 sockets IPv6-only,
so the socket is made here. On a host without IPv6 `"::"` falls back to `0.0.0.0`. Any other
value (`127.0.0.1`, `::1`, `fdaa::3`) is bound as given, in its own family.
"""

from __future__ import annotations

import errno
import logging
import socket

logger = logging.getLogger("shopjobs")

EVERY_ADDRESS = "::"


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket; OSError when it cannot be bound."""
    if host in (EVERY_ADDRESS, ""):
        try:
            return _bind(socket.AF_INET6, "::", port, dual_stack=True)
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
                raise
            logger.warning("no IPv6 on this host: listening on 0.0.0.0:%d only", port)
            return _bind(socket.AF_INET, "0.0.0.0", port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return _bind(family, host, port)


def _bind(
    family: socket.AddressFamily, host: str, port: int, dual_stack: bool = False
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # no SO_REUSEPORT: one owner
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
