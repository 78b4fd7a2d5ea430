"""The picture of the alert windows: the latest value per window, the PNG and what it shows,
atomic replacement, and the throttled writer for `carstream run`."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from pyspark.sql import SparkSession

from carstream import windows_chart
from carstream.config import CountSettings
from carstream.stages import count
from carstream.windows_chart import (
    DPI,
    FIGURE_SIZE,
    Window,
    WindowChartWriter,
    WindowCounts,
    draw,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
START = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def window(
    minute: int,
    rows: int = 10,
    *,
    black: int = 2,
    white: int = 3,
    silver: int = 1,
    speed: int | None = 150,
) -> dict[str, Any]:
    """A value of alert-counts as the count stage writes it (15-minute windows)."""
    start = START + timedelta(minutes=minute)
    return {
        "window_start": start.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "window_end": (start + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "num_of_rows": rows,
        "num_of_black": black,
        "num_of_white": white,
        "num_of_silver": silver,
        "maximum_speed": speed,
        "maximum_gear": 7,
        "maximum_rpm": 7000,
    }


def counts_of(*values: dict[str, Any]) -> WindowCounts:
    counts = WindowCounts()
    counts.update(values)
    return counts


def read_png(path: Path) -> np.ndarray[Any, Any]:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels: np.ndarray[Any, Any] = image.imread(path)
    return pixels


def shows_color(pixels: np.ndarray[Any, Any], color: str) -> bool:
    """Some pixels have `color` (within rounding)."""
    distance = np.abs(pixels[:, :, :3] - np.array(to_rgb(color))).max(axis=2)
    return bool((distance < 0.02).sum() > 50)


def test_draw_writes_a_png_of_the_figure_size(tmp_path: Path) -> None:
    path = tmp_path / "charts" / "windows.png"
    draw(counts_of(*(window(m, rows=10 + m) for m in range(6))), path)
    pixels = read_png(path)
    width, height = FIGURE_SIZE
    assert pixels.shape == (int(height * DPI), int(width * DPI), 4)
    assert shows_color(pixels, "black"), "the black family's bars"
    assert shows_color(pixels, windows_chart._SPEED_COLOR), "the maximum speed line"
    assert [p.name for p in path.parent.iterdir()] == ["windows.png"], "no temporary file left"


def test_an_empty_chart_says_so(tmp_path: Path) -> None:
    summary = draw(WindowCounts(), tmp_path / "empty.png")
    pixels = read_png(tmp_path / "empty.png")
    assert not shows_color(pixels, windows_chart._SPEED_COLOR)
    assert (summary.windows, summary.families, summary.newest) == (0, (), None)
    assert summary.line() == "no windows"


def test_the_latest_value_of_a_window_wins() -> None:
    counts = counts_of(window(0, rows=4), window(1, rows=5), window(0, rows=9))
    assert len(counts) == 2
    assert [w.rows for w in counts.windows()] == [9, 5]

    replayed = WindowCounts.from_messages(
        json.dumps(value).encode() for value in [window(3, rows=1), window(2), window(3, rows=7)]
    )
    assert [(w.start.minute, w.rows) for w in replayed.windows()] == [(2, 10), (3, 7)]


def test_the_summary_counts_distinct_windows_and_names_the_families(tmp_path: Path) -> None:
    counts = counts_of(*(window(m % 4) for m in range(10)))
    summary = draw(counts, tmp_path / "w.png")
    assert summary.windows == 4 == len(counts)
    assert summary.families == ("black", "white", "silver")
    assert summary.first_start == START
    assert summary.last_end == START + timedelta(minutes=18)
    assert summary.line() == (
        "4 windows from 2026-11-26 02:00:00 to 2026-11-26 02:18:00 UTC; "
        "the newest window (02:03:00-02:18:00) holds 10 alerts"
    )
    given = draw(counts, tmp_path / "w.png", families=["red", "white"])
    assert given.families == ("red", "white", "black", "silver")


def test_other_colors_are_the_rows_of_no_family() -> None:
    counted = Window.from_mapping(window(0, rows=10))
    assert counted.families == {"black": 2, "white": 3, "silver": 1}
    assert counted.other(["black", "white", "silver"]) == 4
    assert counted.other(["black"]) == 8
    assert counted.other(["black", "white", "silver", "gray"]) == 4
    overlapping = Window.from_mapping(window(0, rows=5))
    assert overlapping.other(["black", "white", "silver"]) == 0


def test_values_that_are_not_windows_are_skipped() -> None:
    good = json.dumps(window(0)).encode()
    no_rows = json.dumps({k: v for k, v in window(1).items() if k != "num_of_rows"})
    counts = WindowCounts.from_messages(
        [good, b"not json", b"[1, 2]", no_rows, b'{"window_start": 3}', None, b"\xff"]
    )
    assert len(counts) == 1
    assert counts.skipped == 5


def test_times_become_utc_whatever_their_form() -> None:
    aware = START + timedelta(minutes=5)
    as_text = window(5)
    offset = {**as_text, "window_start": "2026-11-26T03:05:00+01:00"}
    # PySpark's collect() gives naive datetimes in the local time zone.
    naive_local = {**as_text, "window_start": aware.astimezone().replace(tzinfo=None)}
    starts = {Window.from_mapping(value).start for value in (as_text, offset, naive_local)}
    assert starts == {aware}
    assert Window.from_mapping(as_text).start.tzinfo == UTC


def test_count_stage_rows_and_its_kafka_values_are_the_same_windows(spark: SparkSession) -> None:
    settings = CountSettings(window="10 minutes", slide="5 minutes")
    frame = spark.createDataFrame(
        [
            ("a", "2026-11-26T02:01:00Z", "Black", 130, 3, 6100),
            ("b", "2026-11-26T02:07:00Z", "Pink", 190, 6, 100),
            ("c", "2026-11-26T02:08:00Z", "Silver", 140, 7, 6500),
        ],
        "event_id string, event_time string, color_name string, speed int, gear int, rpm int",
    )
    windows = count.count_alerts(frame, settings)
    from_rows = counts_of(*(row.asDict() for row in windows.collect()))
    records = count.window_records(windows, "alert-counts").collect()
    from_values = WindowCounts.from_messages(record["value"] for record in records)

    assert from_rows.windows() == from_values.windows()
    assert [
        (w.start, w.rows, w.other(w.families), w.maximum_speed) for w in from_rows.windows()
    ] == [
        (START - timedelta(minutes=5), 1, 0, 130.0),
        (START, 3, 1, 190.0),
        (START + timedelta(minutes=5), 2, 1, 190.0),
    ]


def test_a_failed_drawing_leaves_the_previous_picture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.png"
    draw(counts_of(window(0)), path)
    before = path.read_bytes()

    def half_then_fail(self: Figure, file: Any, **kwargs: Any) -> None:
        file.write(PNG_SIGNATURE)
        raise RuntimeError("disk gone")

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    with pytest.raises(RuntimeError, match="disk gone"):
        draw(counts_of(window(0), window(1)), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.png"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drawn(path: Path) -> bool:
    """Whether the writer (re)drew `path` since the last call; takes the picture away."""
    if not path.exists():
        return False
    read_png(path)
    path.unlink()
    return True


def test_the_writer_draws_at_most_every_interval_and_once_at_the_end(tmp_path: Path) -> None:
    path, clock = tmp_path / "live.png", FakeClock()
    writer = WindowChartWriter(path, min_interval_seconds=5.0, clock=clock)

    writer.add([window(0)])
    assert drawn(path), "the first batch is drawn at once"
    clock.now += 2
    writer.add([window(1)])
    clock.now += 2.9
    writer.add([window(0, rows=20)])
    assert not drawn(path)
    clock.now += 0.1
    writer.add([])
    assert drawn(path), "what was pending, once due"
    assert writer.summary is not None and writer.summary.windows == 2
    clock.now += 10
    writer.add([])
    assert not drawn(path), "nothing new"
    writer.add([window(2)])
    assert drawn(path)
    clock.now += 1
    writer.add([window(3, rows=30)])
    assert not drawn(path)

    writer.close()
    assert drawn(path), "what is pending at the end"
    assert writer.summary is not None and writer.summary.windows == 4
    assert writer.summary.newest is not None and writer.summary.newest.rows == 30
    writer.close()
    assert not drawn(path)


def test_the_writer_draws_an_empty_chart_when_nothing_came(tmp_path: Path) -> None:
    writer = WindowChartWriter(tmp_path / "none.png", families=["black", "red"])
    writer.close()
    assert drawn(tmp_path / "none.png")
    assert writer.summary is not None and writer.summary.families == ("black", "red")


def test_the_writer_logs_failures_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    clock = FakeClock()
    writer = WindowChartWriter(blocker / "w.png", clock=clock)
    with caplog.at_level(logging.ERROR, logger="carstream.windows_chart"):
        writer.add([window(0)])
        writer.add([{"window_start": "yesterday"}])
        writer.close()
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count(f"alert windows chart: could not draw {blocker / 'w.png'}") == 2
    assert "alert windows chart: a row is not a window" in messages
    assert len(writer.counts) == 1
    assert writer.summary is None
