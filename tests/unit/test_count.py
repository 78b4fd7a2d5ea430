"""Alert counter: window bounds, color families, deduplication, the watermark, the output."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, Row, SparkSession

from carstream.config import CountSettings, KafkaSettings
from carstream.stages import StageUsageError, count

ALERT_COLUMNS = (
    "event_id string, event_time string, color_name string, speed int, gear int, rpm int"
)


def alert_row(
    event_id: str,
    event_time: str,
    color: str = "Red",
    speed: int = 130,
    gear: int = 3,
    rpm: int = 100,
) -> tuple[Any, ...]:
    return (event_id, event_time, color, speed, gear, rpm)


def alerts(spark: SparkSession, *rows: tuple[Any, ...]) -> DataFrame:
    return spark.createDataFrame(list(rows), ALERT_COLUMNS)


def minute(text: str) -> datetime:
    return datetime.fromisoformat(f"2024-05-01T{text}")


def by_start(rows: list[Row]) -> dict[str, dict[str, Any]]:
    return {row["window_start"].strftime("%H:%M"): row.asDict() for row in rows}


def test_sliding_windows_bounds(spark: SparkSession) -> None:
    rows = count.count_alerts(
        alerts(spark, alert_row("a", "2024-05-01T12:07:30.000Z")), CountSettings()
    ).collect()
    windows = sorted((row["window_start"], row["window_end"]) for row in rows)
    assert windows == [
        (minute(f"11:{m}:00"), minute(f"12:{m - 45:02d}:00")) for m in range(53, 60)
    ] + [(minute(f"12:{m:02d}:00"), minute(f"12:{m + 15:02d}:00")) for m in range(0, 8)]


def test_window_and_slide_are_configurable(spark: SparkSession) -> None:
    settings = CountSettings(window="10 minutes", slide="5 minutes")
    rows = count.count_alerts(
        alerts(
            spark, alert_row("a", "2024-05-01T12:07:30Z"), alert_row("b", "2024-05-01T12:12:00Z")
        ),
        settings,
    ).collect()
    assert {start: (w["window_end"], w["num_of_rows"]) for start, w in by_start(rows).items()} == {
        "12:00": (minute("12:10:00"), 1),
        "12:05": (minute("12:15:00"), 2),
        "12:10": (minute("12:20:00"), 1),
    }


def test_counts_and_maxima_per_window(spark: SparkSession) -> None:
    rows = count.count_alerts(
        alerts(
            spark,
            alert_row("a", "2024-05-01T12:01:00Z", "Black", speed=130, gear=2, rpm=7000),
            alert_row("b", "2024-05-01T12:02:00Z", "white", speed=190, gear=6, rpm=100),
            alert_row("c", "2024-05-01T12:03:00Z", "Gray", speed=121, gear=7, rpm=6500),
            alert_row("d", "2024-05-01T12:04:00Z", "GREY", speed=10, gear=1, rpm=6001),
            alert_row("e", "2024-05-01T12:05:00Z", "silver", speed=12, gear=1, rpm=6001),
            alert_row("f", "2024-05-01T12:06:00Z", "Pink", speed=11, gear=1, rpm=6001),
        ),
        CountSettings(window="10 minutes", slide="10 minutes"),
    ).collect()
    assert [{k: v for k, v in row.asDict().items() if k != "window_end"} for row in rows] == [
        {
            "window_start": minute("12:00:00"),
            "num_of_rows": 6,
            "num_of_black": 1,
            "num_of_white": 1,
            "num_of_silver": 3,
            "maximum_speed": 190,
            "maximum_gear": 7,
            "maximum_rpm": 7000,
        }
    ]


def test_color_families_are_configurable(spark: SparkSession) -> None:
    settings = CountSettings(
        window="10 minutes", slide="10 minutes", color_families={"warm": ("Red", "PINK")}
    )
    frame = alerts(
        spark,
        alert_row("a", "2024-05-01T12:01:00Z", "red"),
        alert_row("b", "2024-05-01T12:02:00Z", "Pink"),
        alert_row("c", "2024-05-01T12:03:00Z", "Black"),
    )
    (row,) = count.count_alerts(frame, settings).collect()
    assert list(row.asDict()) == count.output_columns(settings)
    assert (row["num_of_rows"], row["num_of_warm"]) == (3, 2)


def test_each_event_id_is_counted_once(spark: SparkSession) -> None:
    replayed = alert_row("a", "2024-05-01T12:01:00Z", speed=190)
    frame = alerts(spark, replayed, replayed, alert_row("b", "2024-05-01T12:02:00Z"), replayed)
    (row,) = count.count_alerts(
        frame, CountSettings(window="5 minutes", slide="5 minutes")
    ).collect()
    assert row["num_of_rows"] == 2


def test_streaming_deduplication_and_watermark(spark: SparkSession, tmp_path: Path) -> None:
    """A replay within the watermark is not counted again; an alert older than the watermark
    (latest event time - 2 minutes) is dropped; windows are emitted as they change."""
    source = tmp_path / "alerts"
    source.mkdir()
    batches: list[list[Row]] = []

    def add_file(name: str, *rows: tuple[Any, ...]) -> None:
        columns = ["event_id", "event_time", "color_name", "speed", "gear", "rpm"]
        lines = [json.dumps(dict(zip(columns, row, strict=True))) for row in rows]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        (tmp_path / name).rename(source / name)

    stream = spark.readStream.schema(ALERT_COLUMNS).json(str(source))
    query = (
        count.count_alerts(stream, CountSettings())
        .writeStream.outputMode("update")
        .foreachBatch(lambda batch, _: batches.append(batch.collect()))
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .start()
    )
    try:
        add_file(
            "1.json", alert_row("a", "2024-05-01T12:00:30Z"), alert_row("a", "2024-05-01T12:00:30Z")
        )
        query.processAllAvailable()
        # Event time advances to 12:20; after this batch the watermark is 12:18.
        add_file(
            "2.json", alert_row("b", "2024-05-01T12:20:00Z"), alert_row("a", "2024-05-01T12:00:30Z")
        )
        query.processAllAvailable()
        add_file(
            "3.json",
            alert_row("late", "2024-05-01T12:10:00Z"),
            alert_row("d", "2024-05-01T12:19:00Z"),
        )
        query.processAllAvailable()
    finally:
        query.stop()

    updates = [by_start(batch) for batch in batches if batch]
    assert len(updates) == 3
    assert updates[0]["12:00"]["num_of_rows"] == 1  # "a" twice in one batch
    assert "12:00" not in updates[1]  # the replay of "a" in the next batch changed nothing
    assert updates[1]["12:06"]["num_of_rows"] == 1
    # "d" (12:19) updates windows 12:05..12:19, "b" (12:20) is in 12:06..12:20. "late" (12:10)
    # would have added one row to windows 12:04..12:10 (those not closed yet); it was dropped.
    assert {start: w["num_of_rows"] for start, w in updates[2].items()} == {
        "12:05": 1,
        **{f"12:{m:02d}": 2 for m in range(6, 20)},
    }


def test_window_records_are_keyed_by_window_start(spark: SparkSession) -> None:
    windows = count.count_alerts(
        alerts(spark, alert_row("a", "2024-05-01T12:07:30Z", "Gray")),
        CountSettings(window="10 minutes", slide="10 minutes"),
    )
    (record,) = count.window_records(windows, "alert-counts").collect()
    assert record["topic"] == "alert-counts"
    assert record["key"] == "2024-05-01T12:00:00.000Z"
    assert json.loads(record["value"]) == {
        "window_start": "2024-05-01T12:00:00.000Z",
        "window_end": "2024-05-01T12:10:00.000Z",
        "num_of_rows": 1,
        "num_of_black": 0,
        "num_of_white": 0,
        "num_of_silver": 1,
        "maximum_speed": 130,
        "maximum_gear": 3,
        "maximum_rpm": 100,
    }


def test_console_table_is_sorted_and_aligned(spark: SparkSession) -> None:
    windows = count.count_alerts(
        alerts(
            spark, alert_row("a", "2024-05-01T12:07:30Z"), alert_row("b", "2024-05-01T12:02:00Z")
        ),
        CountSettings(window="10 minutes", slide="5 minutes"),
    )
    console = io.StringIO()
    publisher = count.WindowPublisher(
        KafkaSettings(), "alert-counts", count.output_columns(CountSettings()), console
    )
    rows = windows.orderBy("window_start").collect()
    text = count.format_windows(rows, 7, publisher.columns)
    lines = text.splitlines()
    assert lines[0] == "alert counts, batch 7: 3 window(s) updated"
    assert lines[1].split() == count.output_columns(CountSettings())
    assert [line.split()[:3] for line in lines[2:]] == [
        ["2024-05-01", "11:55:00", "2024-05-01"],
        ["2024-05-01", "12:00:00", "2024-05-01"],
        ["2024-05-01", "12:05:00", "2024-05-01"],
    ]
    assert len({len(line) for line in lines[1:]}) == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (CountSettings(window="1 minute", slide="5 minutes"), "must not be longer than --window"),
        (CountSettings(color_families={"Dark Colors": ("Black",)}), "a family name must be"),
        (CountSettings(color_families={"rows": ("Black",)}), "and not 'rows'"),
    ],
)
def test_inconsistent_settings_are_rejected(settings: CountSettings, message: str) -> None:
    with pytest.raises(StageUsageError, match=message):
        count.check_settings(settings)
