"""The generator against the real broker: its rate, its limits, its keys, its clean stops.

Stated tolerances: at the default rate (20 cars, one tick per second) every tick follows the
previous one by 1 s +- 50 ms, and a --time-limit of T seconds sends exactly rate * T events
and returns within T + 1 s. At 2,000 events/s each second of event time holds 2,000 +- 5%.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from carstream.config import GeneratorSettings, KafkaSettings, Topics
from carstream.stages import generate
from tests.fixtures.kafka import consume, end_offsets, json_values
from tests.integration.processes import kill_group, run_carstream, start_carstream, wait_until
from tests.unit.test_generate import write_cars

CARS = list(range(2_000_001, 2_000_021))  # 20 cars, the default


def _instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    write_cars(tmp_path, CARS)
    return tmp_path


def test_default_rate_and_time_limit_hold(kafka: KafkaSettings, topics: Topics) -> None:
    started = time.monotonic()
    report = generate.run(kafka, topics, GeneratorSettings(time_limit=5, seed=1), CARS)
    took = time.monotonic() - started

    assert report.stopped_by == "time limit"
    assert (report.sent, report.failed) == (100, 0)
    assert 5.0 <= took <= 6.0
    events = json_values(consume(kafka, topics.sensors))
    assert len(events) == 100
    ticks: dict[str, list[int]] = defaultdict(list)
    for event in events:
        ticks[event["event_time"]].append(event["car_id"])
    assert len(ticks) == 5
    assert all(sorted(cars) == CARS for cars in ticks.values()), "each tick: every car once"
    instants = sorted(_instant(text) for text in ticks)
    gaps = [later - earlier for earlier, later in itertools.pairwise(instants)]
    assert all(abs(gap - 1.0) <= 0.05 for gap in gaps), gaps


def test_a_higher_rate_holds_second_by_second(kafka: KafkaSettings, topics: Topics) -> None:
    settings = GeneratorSettings(rate=2000, time_limit=3)
    report = generate.run(kafka, topics, settings, CARS)
    assert (report.sent, report.failed) == (6000, 0)
    instants = [_instant(e["event_time"]) for e in json_values(consume(kafka, topics.sensors))]
    first = min(instants)
    per_second = Counter(int(instant - first) for instant in instants)
    assert sorted(per_second) == [0, 1, 2]
    assert all(abs(count - 2000) <= 100 for count in per_second.values()), per_second


def test_max_events_stops_exactly_and_events_are_keyed_by_car(
    kafka: KafkaSettings, topics: Topics
) -> None:
    report = generate.run(kafka, topics, GeneratorSettings(rate=500, max_events=45), CARS)
    assert report.stopped_by == "max events"
    assert report.sent == 45
    messages = consume(kafka, topics.sensors)
    assert len(messages) == 45
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for message in messages:
        event = json.loads(message.value() or b"")
        assert message.key() == str(event["car_id"]).encode()
        partition_of[message.key() or b""].add(message.partition())
    assert all(len(partitions) == 1 for partitions in partition_of.values())
    assert len({p for partitions in partition_of.values() for p in partitions}) == 2


def test_the_same_seed_sends_the_same_values(kafka: KafkaSettings, topics: Topics) -> None:
    settings = GeneratorSettings(rate=1000, max_events=60, seed=11)
    generate.run(kafka, topics, settings, CARS)
    generate.run(kafka, topics, settings, CARS)
    events = json_values(consume(kafka, topics.sensors))
    without_time = Counter(
        json.dumps({k: v for k, v in e.items() if k != "event_time"}, sort_keys=True)
        for e in events
    )
    assert len(without_time) == 60 and set(without_time.values()) == {2}


def _cli_args(kafka: KafkaSettings, topics: Topics, warehouse: Path) -> list[str]:
    return [
        "stage",
        "generate",
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--topic-sensors",
        topics.sensors,
        "--warehouse",
        str(warehouse),
    ]


def test_stage_cli_stops_at_its_time_limit(
    kafka: KafkaSettings, topics: Topics, warehouse: Path
) -> None:
    result = run_carstream([*_cli_args(kafka, topics, warehouse), "--time-limit", "2"])
    assert result.returncode == 0, result.stderr
    assert "stopped by time limit: 40 events sent" in result.stderr
    assert end_offsets(kafka, [topics.sensors])[topics.sensors] == 40


def test_stage_cli_delivers_everything_it_sent_when_terminated(
    kafka: KafkaSettings, topics: Topics, warehouse: Path, tmp_path: Path
) -> None:
    log = tmp_path / "generate.out"
    process = start_carstream([*_cli_args(kafka, topics, warehouse), "--rate", "2000"], log)
    try:
        wait_until(
            lambda: end_offsets(kafka, [topics.sensors])[topics.sensors] >= 2000,
            60,
            "the generator to send events",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        kill_group(process)
    summary = re.search(r"stopped by signal: (\d+) events sent", log.read_text())
    assert summary, log.read_text()
    assert end_offsets(kafka, [topics.sensors])[topics.sensors] == int(summary.group(1))


def test_stage_cli_reports_a_missing_dimension(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    result = run_carstream(_cli_args(kafka, topics, tmp_path / "empty"))
    assert result.returncode == 1
    assert "cannot read the cars dimension" in result.stderr
    assert "Traceback" not in result.stderr


def test_stage_cli_refuses_more_cars_than_the_dimension_has(
    kafka: KafkaSettings, topics: Topics, warehouse: Path
) -> None:
    result = run_carstream([*_cli_args(kafka, topics, warehouse), "--num-cars", "21"])
    assert result.returncode == 2
    assert "usage: carstream stage generate" in result.stderr
    assert "the cars dimension has only 20 cars" in result.stderr
