"""Log lines: readable text by default, one JSON object per line with ``SER_LOG_FORMAT=json``.

A record may carry ``fields`` (a dict, e.g. the access log's request id, route, status, latency): the JSON
format puts them in the object, the text format appends them as ``key=value``.
"""

from __future__ import annotations

import json
import logging
import time

TEXT_FORMAT = "%(levelname)-9s %(message)s"  # uvicorn's look


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(), "logger": record.name,
                 "pid": record.process, "message": record.getMessage()}  # pid: which worker
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
        return line


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(logger: logging.Logger, level: str, log_format: str) -> None:
    """uvicorn configures only its own loggers: give the service's one handler in the chosen format."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(level.upper())


def uvicorn_log_config(log_format: str) -> dict | None:
    """uvicorn's own lines (start, stop, worker restarts) in JSON too; None keeps uvicorn's default look."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
                    "uvicorn.error": {"level": "INFO"},
                    "uvicorn.access": {"handlers": ["default"], "level": "INFO", "propagate": False}},
    }
