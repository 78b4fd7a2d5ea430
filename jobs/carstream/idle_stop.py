"""A processingTime stage that stops itself when its input is quiet (--idle-stop-seconds).

The stage keeps running micro-batches (empty ones too, each reported by a progress event);
`IdleWatch` looks at the queries' recent progress and says when none of them has had an input
row for the given time. The stage then stops its queries cleanly: the checkpoint holds every
processed batch, so the next start goes on from there. The operator sees the application
complete and marks the stage Idle (and with spec.wake starts it again on backlog).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol


class Query(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def recentProgress(self) -> Sequence[Any]: ...


def _field(progress: Any, name: str) -> Any:
    """A field of a progress report: a dict (Spark 3) or a StreamingQueryProgress (Spark 4),
    which both answer ["name"]."""
    try:
        return progress[name]
    except (KeyError, TypeError):
        return None


class IdleWatch:
    """Idle once no query has read a row for `seconds` (a monotonic clock, fed by the caller)."""

    def __init__(self, seconds: float, started: float) -> None:
        self.seconds = seconds
        self.last_input = started
        self._seen_batch: dict[str, int] = {}
        # how often to look: recentProgress carries up to 100 reports over py4j
        self.poll_seconds = min(5.0, max(seconds / 4, 0.5))

    def observe(self, reports: Mapping[str, Iterable[Any]], now: float) -> None:
        """REPORTS: each query's recent progress, by query id; a batch not seen before that
        read rows counts as input now."""
        for query_id, progress in reports.items():
            seen = self._seen_batch.get(query_id, -1)
            for report in progress:
                batch = _field(report, "batchId")
                if not isinstance(batch, int) or batch <= seen:
                    continue
                self._seen_batch[query_id] = max(self._seen_batch.get(query_id, -1), batch)
                if (_field(report, "numInputRows") or 0) > 0:
                    self.last_input = now

    def idle(self, now: float) -> bool:
        return now - self.last_input >= self.seconds

    def look(self, queries: Sequence[Query], now: float) -> bool:
        self.observe({str(query.id): list(query.recentProgress) for query in queries}, now)
        return self.idle(now)
