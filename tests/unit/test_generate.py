"""The generator's event format, the cars it reads, and its limits (no Kafka needed here)."""

from __future__ import annotations

import json
import random
import re
import uuid
from calendar import timegm
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from carstream import cli
from carstream.config import StorageSettings
from carstream.stages import StageUsageError, generate

CARS = [4821734, 1000001, 9999999]
ISO_MILLIS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def write_cars(warehouse: Path, car_ids: list[int]) -> None:
    """A cars dimension laid out like Spark writes it: a folder with a part file and _SUCCESS."""
    folder = warehouse / "dims" / "cars"
    folder.mkdir(parents=True)
    table = pa.table(
        {
            "car_id": pa.array(car_ids, pa.int32()),
            "driver_id": pa.array([123456789] * len(car_ids), pa.int32()),
            "model_id": pa.array([1] * len(car_ids), pa.int32()),
            "color_id": pa.array([1] * len(car_ids), pa.int32()),
        }
    )
    pq.write_table(table, folder / "part-00000-c000.snappy.parquet")
    (folder / "_SUCCESS").write_bytes(b"")


def test_events_follow_the_spec() -> None:
    formatter = generate.EventFormatter(CARS, random.Random(3))
    events = formatter.tick("2026-11-25T21:12:27.123Z", len(CARS))
    assert [key for key, _ in events] == [str(car).encode() for car in CARS]
    for (_, value), car in zip(events, CARS, strict=True):
        event = json.loads(value)
        assert list(event) == ["event_id", "event_time", "car_id", "speed", "rpm", "gear"]
        assert uuid.UUID(event["event_id"]).version == 4
        assert str(uuid.UUID(event["event_id"])) == event["event_id"]
        assert event["event_time"] == "2026-11-25T21:12:27.123Z"
        assert event["car_id"] == car
        assert all(type(event[name]) is int for name in ("car_id", "speed", "rpm", "gear"))
        assert 0 <= event["speed"] <= 200
        assert 0 <= event["rpm"] <= 8000
        assert 1 <= event["gear"] <= 7


def test_values_cover_their_whole_ranges() -> None:
    formatter = generate.EventFormatter([1000001], random.Random(5))
    events = [json.loads(v) for _ in range(40_000) for _, v in formatter.tick("t", 1)]
    assert {e["gear"] for e in events} == set(range(1, 8))
    assert {e["speed"] for e in events} == set(range(201))
    rpms = [e["rpm"] for e in events]
    assert min(rpms) < 20 and max(rpms) > 7980
    assert len({e["event_id"] for e in events}) == len(events)


def test_the_same_seed_gives_the_same_events() -> None:
    def events(seed: int) -> list[tuple[bytes, str]]:
        formatter = generate.EventFormatter(CARS, random.Random(seed))
        return formatter.tick("2026-01-01T00:00:00.000Z", 3) + formatter.tick("x", 3)

    assert events(7) == events(7)
    assert events(7) != events(8)


def test_a_partial_tick_sends_the_first_cars() -> None:
    formatter = generate.EventFormatter(CARS, random.Random(1))
    assert [key for key, _ in formatter.tick("t", 2)] == [b"4821734", b"1000001"]


@pytest.mark.parametrize(
    ("instant", "text"),
    [
        (datetime(2026, 11, 25, 21, 12, 27, 123000, UTC), "2026-11-25T21:12:27.123Z"),
        (datetime(2026, 1, 1, 0, 0, 0, 0, UTC), "2026-01-01T00:00:00.000Z"),
        (datetime(2026, 12, 31, 23, 59, 59, 999000, UTC), "2026-12-31T23:59:59.999Z"),
    ],
)
def test_timestamps_are_iso_8601_utc_with_milliseconds(instant: datetime, text: str) -> None:
    formatter = generate.EventFormatter(CARS, random.Random(1))
    seconds = timegm(instant.utctimetuple()) + instant.microsecond / 1e6
    assert formatter.timestamp(seconds + 0.0004) == text
    assert ISO_MILLIS.match(text)


def test_timestamps_change_second_correctly() -> None:
    formatter = generate.EventFormatter(CARS, random.Random(1))
    base = timegm((2026, 3, 1, 10, 0, 0))
    texts = [formatter.timestamp(base + step / 4) for step in range(6)]
    assert texts == [
        "2026-03-01T10:00:00.000Z",
        "2026-03-01T10:00:00.250Z",
        "2026-03-01T10:00:00.500Z",
        "2026-03-01T10:00:00.750Z",
        "2026-03-01T10:00:01.000Z",
        "2026-03-01T10:00:01.250Z",
    ]


def test_reads_car_ids_of_the_dimension_in_row_order(tmp_path: Path) -> None:
    write_cars(tmp_path, CARS)
    assert generate.read_car_ids(StorageSettings(warehouse=str(tmp_path))) == CARS


def test_a_missing_dimension_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(generate.CarsMissing, match="run `carstream stage dims` first"):
        generate.read_car_ids(StorageSettings(warehouse=str(tmp_path / "nowhere")))


def test_an_empty_dimension_is_a_clear_error(tmp_path: Path) -> None:
    write_cars(tmp_path, [])
    with pytest.raises(generate.CarsMissing, match="has no rows"):
        generate.read_car_ids(StorageSettings(warehouse=str(tmp_path)))


def test_num_cars_takes_the_first_cars_and_no_more_than_there_are() -> None:
    assert generate.choose_cars(CARS, None) == CARS
    assert generate.choose_cars(CARS, 2) == CARS[:2]
    with pytest.raises(StageUsageError, match="has only 3 cars"):
        generate.choose_cars(CARS, 4)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--rate", "-5"], "must be a positive number"),
        (["--rate", "fast"], "is not a number"),
        (["--time-limit", "0"], "must be a positive number"),
        (["--max-events", "-1"], "must be zero or more"),
        (["--num-cars", "0"], "must be a positive integer"),
    ],
)
def test_bad_options_print_usage(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["stage", "generate", *option])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage: carstream stage generate" in error
    assert message in error
