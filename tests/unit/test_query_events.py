"""Streaming query events reach carstream's handlers as the JSON Spark writes for them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from carstream import query_events


class Recorder(query_events.QueryEventHandler):
    def __init__(self, query: str) -> None:
        self.query = query
        self.ids: set[str] = set()
        self.events: list[tuple[str, Mapping[str, Any]]] = []

    def started(self, event: Mapping[str, Any]) -> None:
        if event.get("name") == self.query:
            self.ids.add(event["id"])
            self.events.append(("started", event))

    def progress(self, report: Mapping[str, Any]) -> None:
        if report.get("id") in self.ids:
            self.events.append(("progress", report))

    def terminated(self, event: Mapping[str, Any]) -> None:
        if event.get("id") in self.ids:
            self.events.append(("terminated", event))


class Failing(query_events.QueryEventHandler):
    def progress(self, report: Mapping[str, Any]) -> None:
        raise RuntimeError("a handler that fails")


def test_each_handler_gets_start_progress_with_observed_counts_and_end(
    spark: SparkSession, tmp_path: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.json").write_text("\n".join(json.dumps({"n": n}) for n in range(10)))
    recorder = Recorder("events-test")
    query_events.listen(spark, Failing(), recorder)  # the first one's failure stops nothing
    rows = spark.readStream.schema("n int").json(str(source))
    observed = rows.observe("counts", F.count_if(F.col("n") >= 5).alias("big"))
    query = (
        observed.writeStream.format("noop")
        .queryName("events-test")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(120)
    assert query.exception() is None

    def settled() -> bool:
        return any(kind == "terminated" for kind, _ in recorder.events)

    # The listener bus delivers asynchronously: the end may come a moment after the query's.
    for _ in range(100):
        if settled():
            break
        query.awaitTermination(0.1)
    kinds = [kind for kind, _ in recorder.events]
    assert kinds[0] == "started" and kinds[-1] == "terminated" and "progress" in kinds, kinds
    started = recorder.events[0][1]
    assert started["id"] == str(query.id) and started["runId"] == str(query.runId)
    (report,) = [event for kind, event in recorder.events if kind == "progress"]
    assert report["name"] == "events-test" and report["numInputRows"] == 10
    assert report["observedMetrics"] == {"counts": {"big": 5}}
    assert recorder.events[-1][1].get("exception") is None
