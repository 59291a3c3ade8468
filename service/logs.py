"""Logging for the project's own loggers (`shopjobs.*`), the same in web and worker.

arq and uvicorn configure only their own loggers; without this, our INFO lines (one per job
event) would be dropped by Python's last-resort handler.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "shopjobs"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
