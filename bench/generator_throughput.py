"""Generator: the most events per second it gets into the local broker."""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Sequence
from typing import Any

from common import CpuMeter

from carstream.config import GeneratorSettings, KafkaSettings, Topics
from carstream.stages import generate

UNLIMITED_RATE = 1e12
PROFILED_EVENTS = 200_000
WARM_UP_EVENTS = 1_000


def warm_up(kafka: KafkaSettings, topics: Topics, car_ids: Sequence[int]) -> None:
    """A few events first, so that what is measured is not the broker's start-up."""
    settings = GeneratorSettings(rate=UNLIMITED_RATE, max_events=WARM_UP_EVENTS, seed=1)
    generate.run(kafka, topics, settings, car_ids)


def measure(
    kafka: KafkaSettings, topics: Topics, car_ids: Sequence[int], events: int, seed: int
) -> dict[str, Any]:
    """Sends `events` events as fast as it can (no pacing) and waits for every ack."""
    settings = GeneratorSettings(rate=UNLIMITED_RATE, max_events=events, seed=seed)
    meter = CpuMeter()
    with meter.measure():
        report = generate.run(kafka, topics, settings, car_ids)
    if report.failed:
        raise RuntimeError(f"{report.failed} events were not delivered")
    return {
        "events": report.sent,
        "seconds": round(report.seconds, 2),
        "events_per_second": round(report.rate),
        "cores_used": meter.cores_used(),
    }


def profile(
    kafka: KafkaSettings, topics: Topics, car_ids: Sequence[int], top: int = 8
) -> list[dict[str, Any]]:
    """Where the generator's own time goes (cProfile, functions by time spent inside them)."""
    settings = GeneratorSettings(rate=UNLIMITED_RATE, max_events=PROFILED_EVENTS, seed=99)
    profiler = cProfile.Profile()
    profiler.enable()
    generate.run(kafka, topics, settings, car_ids)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (path, line, function), (_, calls, own, _cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{path.rsplit('/', 1)[-1]}:{line}({function})",
                "calls": calls,
                "share_of_time": round(own / total, 3),
            }
        )
    rows.sort(key=lambda row: -row["share_of_time"])
    return rows[:top]
