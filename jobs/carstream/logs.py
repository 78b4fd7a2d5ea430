"""How carstream's commands log: plain text (the default) or one JSON object per line
(`--log-format json`, env CARSTREAM_LOG_FORMAT), for log collectors such as Loki, Fluent Bit
or CloudWatch.

A JSON line has time, level, logger and message, the process's context (command, pipeline,
stage: set once by `carstream` from the command line) and the fields a message carries through
`extra` (query, query_id, batch_id: the progress of a micro-batch), plus the exception's
traceback when there is one. Spark's own JVM logs (log4j) stay text.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s: %(message)s"
RECORD_FIELDS = ("query", "query_id", "batch_id")
"""Fields a log call can pass in `extra` that a JSON line shows."""

_context: dict[str, str] = {}


def set_context(**fields: str | None) -> None:
    """Fields every JSON line of this process carries (None leaves a field out)."""
    _context.update({name: value for name, value in fields.items() if value is not None})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context,
        }
        for name in RECORD_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(log_format: str = "text") -> None:
    """Sets up the root logger once per process: carstream's messages from INFO up, other
    libraries' (py4j, kopf...) from WARNING up, as text or JSON on stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("carstream").setLevel(logging.INFO)
    # py4j logs, with a traceback, every exception that a Python callback (a foreachBatch
    # function, a query listener) raises back to Spark; Spark then fails the query with it,
    # which the stage reports. Stopping a query in the middle of a micro-batch makes one.
    logging.getLogger("py4j").setLevel(logging.CRITICAL)


def is_json() -> bool:
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
