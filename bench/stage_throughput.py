"""Spark stages draining a pre-filled topic (availableNow): events per second, and where the
time of each micro-batch went (Spark's own progress: durationMs per phase)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from common import CpuMeter
from pyspark.sql.streaming import StreamingQuery


def _phases(progress: Sequence[Any]) -> dict[str, int]:
    """Milliseconds per phase, summed over the micro-batches."""
    totals: dict[str, int] = {}
    for batch in progress:
        for phase, millis in (batch.durationMs or {}).items():
            totals[phase] = totals.get(phase, 0) + int(millis)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def drain(start: Callable[[], list[StreamingQuery]], input_name: str) -> dict[str, Any]:
    """Starts availableNow queries, waits until they have drained their input, and reports
    the rows the first query read per second of wall time (query start-up included)."""
    meter = CpuMeter()
    with meter.measure():
        queries = start()
        while any(query.isActive for query in queries):
            time.sleep(0.2)
    for query in queries:
        if query.exception() is not None:
            raise RuntimeError(f"query {query.name} failed: {query.exception()}")
    main = queries[0]
    progress = main.recentProgress
    rows = sum(batch.numInputRows for batch in progress)
    processing_seconds = sum(int(batch.batchDuration) for batch in progress) / 1000
    return {
        "input": input_name,
        "rows": rows,
        "seconds": round(meter.seconds, 2),
        "events_per_second": round(rows / meter.seconds),
        "micro_batches": len(progress),
        "events_per_second_in_batches": round(rows / processing_seconds) if rows else 0,
        "batch_phases_ms": _phases(progress),
        "cores_used": meter.cores_used(),
    }
