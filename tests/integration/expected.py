"""What the pipeline must produce, recomputed in plain Python from the contract (docs/contract.md).

Nothing here uses carstream's code: the dimensions are read with pyarrow, the JSON with the
standard library, and enrichment, the alert rules and the windowed counts are written out
again from the specification, so that a shared mistake cannot make a test pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SENSOR_FIELDS = ("event_id", "event_time", "car_id", "speed", "rpm", "gear")
RANGES = {"speed": (0, 200), "rpm": (0, 8000), "gear": (1, 7)}
SPEED_LIMIT, RPM_LIMIT = 120, 6000
FAMILIES = {"black": {"black"}, "white": {"white"}, "silver": {"silver", "gray", "grey"}}


@dataclass(frozen=True)
class CarProfile:
    driver_id: int
    brand_name: str
    model_name: str
    color_name: str


def read_profiles(warehouse: Path | Callable[[str], pa.Table]) -> dict[int, CarProfile]:
    """car_id -> what enrichment adds, from the three Parquet tables of a local warehouse, or
    of tables read by a function of the table's name."""

    def rows(table: str) -> list[dict[str, Any]]:
        if isinstance(warehouse, Path):
            return list(pq.read_table(warehouse / "dims" / table).to_pylist())
        return list(warehouse(table).to_pylist())

    models = {row["model_id"]: row for row in rows("car_models")}
    colors = {row["color_id"]: row["color_name"] for row in rows("car_colors")}
    return {
        car["car_id"]: CarProfile(
            driver_id=car["driver_id"],
            brand_name=models[car["model_id"]]["car_brand"],
            model_name=models[car["model_id"]]["car_model"],
            color_name=colors[car["color_id"]],
        )
        for car in rows("cars")
    }


def valid_sensor_event(value: bytes) -> dict[str, Any] | None:
    """The event if `value` is a valid sensor event per the spec, else None."""
    try:
        event = json.loads(value)
    except ValueError:
        return None
    if not isinstance(event, dict) or any(event.get(name) is None for name in SENSOR_FIELDS):
        return None
    if not isinstance(event["event_id"], str) or not isinstance(event["event_time"], str):
        return None
    if any(type(event[name]) is not int for name in ("car_id", "speed", "rpm", "gear")):
        return None
    try:
        if datetime.fromisoformat(event["event_time"].replace("Z", "+00:00")).tzinfo is None:
            return None
    except ValueError:
        return None
    if any(not low <= event[name] <= high for name, (low, high) in RANGES.items()):
        return None
    return {name: event[name] for name in SENSOR_FIELDS}


def enriched(event: Mapping[str, Any], profile: CarProfile) -> dict[str, Any]:
    return {
        **event,
        "driver_id": profile.driver_id,
        "brand_name": profile.brand_name,
        "model_name": profile.model_name,
        "color_name": profile.color_name,
        "expected_gear": (event["speed"] + 15) // 30,  # round(speed / 30), half up
    }


def fired_rules(event: Mapping[str, Any]) -> list[str]:
    rules = []
    if event["speed"] > SPEED_LIMIT:
        rules.append("speed")
    if event["expected_gear"] != event["gear"]:
        rules.append("gear")
    if event["rpm"] > RPM_LIMIT:
        rules.append("rpm")
    return rules


def epoch_millis(text: str) -> int:
    instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(instant.timestamp() * 1000)


def iso_millis(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Expected:
    enriched: dict[str, dict[str, Any]]
    """event_id -> the enriched record."""
    alerts: dict[str, dict[str, Any]]
    """event_id -> the alert record."""
    unknown_cars: list[bytes]
    """Raw values of valid events whose car is not in the dimension."""
    invalid: list[bytes]
    """Raw values that are not valid sensor events."""


def expected_outputs(
    sensor_values: Iterable[bytes], profiles: Mapping[int, CarProfile]
) -> Expected:
    result = Expected({}, {}, [], [])
    for value in sensor_values:
        event = valid_sensor_event(value)
        if event is None:
            result.invalid.append(value)
            continue
        profile = profiles.get(event["car_id"])
        if profile is None:
            result.unknown_cars.append(value)
            continue
        record = enriched(event, profile)
        result.enriched[event["event_id"]] = record
        rules = fired_rules(record)
        if rules:
            result.alerts[event["event_id"]] = {**record, "rules": rules}
    return result


def window_counts(
    alerts: Iterable[Mapping[str, Any]], window_seconds: int, slide_seconds: int
) -> dict[str, dict[str, Any]]:
    """window_start (ISO text) -> the counter's row, each event_id counted once."""
    unique = {alert["event_id"]: alert for alert in alerts}
    window, slide = window_seconds * 1000, slide_seconds * 1000
    windows: dict[int, list[Mapping[str, Any]]] = {}
    for alert in unique.values():
        at = epoch_millis(alert["event_time"])
        start = at - at % slide
        while start > at - window:
            windows.setdefault(start, []).append(alert)
            start -= slide
    counts = {}
    for start, members in windows.items():
        colors = [alert["color_name"].lower() for alert in members]
        counts[iso_millis(start)] = {
            "window_start": iso_millis(start),
            "window_end": iso_millis(start + window),
            "num_of_rows": len(members),
            **{
                f"num_of_{family}": sum(color in names for color in colors)
                for family, names in FAMILIES.items()
            },
            "maximum_speed": max(alert["speed"] for alert in members),
            "maximum_gear": max(alert["gear"] for alert in members),
            "maximum_rpm": max(alert["rpm"] for alert in members),
        }
    return counts


def latest_per_key(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, Any]:
    """The last JSON value of each key, in the order given (a compacted topic's view)."""
    latest: dict[str, Any] = {}
    for key, value in records:
        latest[(key or b"").decode()] = json.loads(value or b"")
    return latest
