"""Live progress of a running pipeline, read from what its topics hold.

Counting records by topic end offsets is truthful whatever writes them: events produced is
the end of sensors-sample, enriched events the end of samples-enriched, and so on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from carstream.config import Topics
from carstream.kafka_admin import TopicAdmin


@dataclass(frozen=True)
class Snapshot:
    at: float
    """time.monotonic() when the offsets were read."""
    produced: int
    enriched: int
    alerts: int
    dead_letters: int
    windows: int


@dataclass(frozen=True)
class Change:
    """Two snapshots: the totals of the later one and the rates in between."""

    current: Snapshot
    previous: Snapshot | None

    def rate(self, field: str) -> float:
        if self.previous is None:
            return 0.0
        seconds = self.current.at - self.previous.at
        if seconds <= 0:
            return 0.0
        later: int = getattr(self.current, field)
        earlier: int = getattr(self.previous, field)
        return (later - earlier) / seconds

    def describe(self, elapsed: float) -> str:
        c = self.current
        return (
            f"[{elapsed:5.0f} s] produced {c.produced:,} ({self.rate('produced'):,.0f}/s)"
            f" | enriched {c.enriched:,} ({self.rate('enriched'):,.0f}/s)"
            f" | alerts {c.alerts:,} ({self.rate('alerts'):,.0f}/s)"
            f" | dead letters {c.dead_letters:,} | window updates {c.windows:,}"
        )


class TopicProgress:
    """Reads the end offsets of the pipeline's topics and reports totals and rates."""

    def __init__(
        self, admin: TopicAdmin, topics: Topics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.admin = admin
        self.topics = topics
        self.clock = clock
        self._last: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        t = self.topics
        ends = self.admin.end_offsets(t.all())
        return Snapshot(
            at=self.clock(),
            produced=ends[t.sensors],
            enriched=ends[t.enriched],
            alerts=ends[t.alerts],
            dead_letters=ends[t.dlq],
            windows=ends[t.counts],
        )

    def sample(self) -> Change:
        """Reads the offsets now; rates are against the previous sample."""
        current = self.snapshot()
        change = Change(current, self._last)
        self._last = current
        return change
