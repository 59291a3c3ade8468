"""Logging for both processes: JSON lines in production, readable text in `make dev`.

LOG_FORMAT=json writes one JSON object per line, with `timestamp`, `level`, `logger` and
`message`, plus the fields bound to the work in hand: a job's run binds `job_id`, `type` and
`shop`, a web request binds `request_id`, and every line logged inside carries them (by the
runner, a handler, the Admin API client alike). The binding lives in a contextvar, which
asyncio keeps per task, so concurrent jobs and requests never see each other's fields.
Fields given with `extra=` on one call are added too.

The app's own loggers (`logging.getLogger("myapp")`, or `__name__` in the modules SHOPJOBS_APP
names) go through the same handler, with the same fields: docs/your-app.md#logging.

arq and uvicorn configure loggers of their own; `adopt()` moves them onto our handler, so that
in json mode every line a process writes is JSON. uvicorn's access log is always off: the
web's request middleware logs each request instead, without the query string, which holds
Shopify's signatures.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson

LOGGER_NAME = "shopjobs"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FOREIGN_LOGGERS = ("uvicorn", "uvicorn.error")

_NOTHING_BOUND: Mapping[str, Any] = MappingProxyType({})
_bound: ContextVar[Mapping[str, Any]] = ContextVar("shopjobs_log_fields", default=_NOTHING_BOUND)

# Attributes every LogRecord has; anything else on a record came from `extra=` or a binding.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}  # color_message: uvicorn's duplicate


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add fields to every line logged in this block (and the tasks it starts)."""
    token = _bound.set(MappingProxyType({**_bound.get(), **fields}))
    try:
        yield
    finally:
        _bound.reset(token)


def bound_fields() -> Mapping[str, Any]:
    return _bound.get()


class BoundFields(logging.Filter):
    """Copies the bound fields onto each record; a field given with `extra=` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _bound.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def _lighter_records() -> None:
    """No caller frame, thread, process or task name on a record: no line shows them, and
    finding them was a tenth of a no-op job's logging (the logging docs' "Optimization")."""
    logging._srcfile = None  # documented there (a private name, but the documented knob)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _handler(log_format: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(BoundFields())
    return handler


def configure_logging(
    log_format: str = "text", level: int = logging.INFO, also: Sequence[str] = ()
) -> None:
    """Set up the `shopjobs` loggers once per process (the first call's format wins), and the
    app's loggers `also` names (SHOPJOBS_APP's modules: docs/your-app.md) the same way: the
    same handler, the job's or request's fields bound, INFO and up."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        _lighter_records()
        logger.addHandler(_handler(log_format))
        logger.setLevel(level)
        logger.propagate = False
    for name in also:
        app_logger = logging.getLogger(name)
        if app_logger.level == logging.NOTSET:
            app_logger.setLevel(level)
        adopt(name)
    logging.getLogger("uvicorn.access").disabled = True
    if log_format == "json":
        adopt(*FOREIGN_LOGGERS)


def adopt(*names: str) -> None:
    """Route other libraries' loggers through our handler (call after they configured them)."""
    ours = logging.getLogger(LOGGER_NAME).handlers
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers = list(ours)
        logger.propagate = False
