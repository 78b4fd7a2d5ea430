"""The session's streaming query events, handed to carstream's handlers as plain JSON.

PySpark's `StreamingQueryListener` turns every event into Python objects field by field, once
per listener: a progress report costs dozens of py4j round trips, and for each observed
metric a `_jvm.PythonSQLUtils` lookup that py4j resolves by trying `Class.forName` in each
imported package, each miss searching every jar of the class path. Spark's JVM pays for that
on its listener thread at every micro-batch of every query (in `carstream run` at 1 s
triggers it was the "class loading/jar reading" share of bench/capacity.py's profile).

Here one Java listener serves all of carstream's handlers, and an event crosses py4j once, as
the JSON Spark itself writes for it (`event.json()`: what `StreamingQueryProgress.json` and
Spark Connect's listener bus use). The handlers get dicts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pyspark.sql import SparkSession

JAVA_LISTENER = "org.apache.spark.sql.streaming.PythonStreamingQueryListener"
logger = logging.getLogger("carstream.query_events")


class QueryEventHandler:
    """What a handler may override. `started`: id, runId, name, timestamp; `progress`: the
    progress report (StreamingQueryProgress.json); `idle`: id, runId, name, timestamp;
    `terminated`: id, runId, name, exception (null when the query stopped without error).
    `name` is the query's name, or its id when it has none (for `idle`: None when the query
    started before the listener)."""

    def started(self, event: Mapping[str, Any]) -> None:
        pass

    def progress(self, report: Mapping[str, Any]) -> None:
        pass

    def idle(self, event: Mapping[str, Any]) -> None:
        pass

    def terminated(self, event: Mapping[str, Any]) -> None:
        pass


class _JavaListener:
    """The py4j side of PythonStreamingQueryListener: each event as JSON, to every handler."""

    def __init__(self, handlers: Sequence[QueryEventHandler]) -> None:
        self.handlers = list(handlers)
        self.names: dict[str, str] = {}  # query id -> name, for the events that lack it

    def _dispatch(self, method: str, payload: Mapping[str, Any]) -> None:
        for handler in self.handlers:
            try:
                getattr(handler, method)(payload)
            except Exception:  # one handler's failure must not starve the others
                logger.exception("%s.%s failed", type(handler).__name__, method)

    @staticmethod
    def _read(jevent: Any) -> dict[str, Any] | None:
        try:
            event: dict[str, Any] = json.loads(jevent.json())
        except Exception:  # an exception here would reach Spark's listener bus as a py4j error
            logger.exception("could not read a streaming query event")
            return None
        return event

    def onQueryStarted(self, jevent: Any) -> None:
        event = self._read(jevent)
        if event is not None:
            event["name"] = event.get("name") or str(event["id"])
            self.names[str(event["id"])] = event["name"]
            self._dispatch("started", event)

    def onQueryProgress(self, jevent: Any) -> None:
        event = self._read(jevent)
        if event is not None:
            self._dispatch("progress", event["progress"])

    def onQueryIdle(self, jevent: Any) -> None:
        event = self._read(jevent)
        if event is not None:
            event["name"] = self.names.get(str(event["id"]))
            self._dispatch("idle", event)

    def onQueryTerminated(self, jevent: Any) -> None:
        event = self._read(jevent)
        if event is not None:
            event["name"] = self.names.pop(str(event["id"]), str(event["id"]))
            self._dispatch("terminated", event)

    class Java:
        implements: ClassVar[list[str]] = [JAVA_LISTENER]


def listen(spark: SparkSession, *handlers: QueryEventHandler) -> None:
    """Registers `handlers` for the events of every streaming query of `spark`'s session,
    behind one listener."""
    from pyspark.java_gateway import ensure_callback_server_started

    context = spark.sparkContext
    ensure_callback_server_started(context._gateway)
    jvm: Any = context._jvm
    wrapper = jvm.org.apache.spark.sql.streaming.PythonStreamingQueryListenerWrapper(
        _JavaListener(handlers)
    )
    spark._jsparkSession.streams().addListener(wrapper)
