"""`carstream report` against the real broker: the latest value of each window of alert-counts,
drawn as a PNG, and one line that sums it up; usage and read errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from matplotlib import image

from carstream import cli
from carstream.config import KafkaSettings, Topics
from carstream.kafka_admin import TopicAdmin
from tests.fixtures.kafka import produce

START = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def window_record(minute: int, rows: int, speed: int) -> tuple[str, str]:
    """(key, value) as the count stage writes them to alert-counts."""
    start = START + timedelta(minutes=minute)
    value: dict[str, Any] = {
        "window_start": iso(start),
        "window_end": iso(start + timedelta(minutes=15)),
        "num_of_rows": rows,
        "num_of_black": rows // 3,
        "num_of_white": rows // 4,
        "num_of_silver": 1,
        "maximum_speed": speed,
        "maximum_gear": 6,
        "maximum_rpm": 7100,
    }
    return iso(start), json.dumps(value)


def report(kafka: KafkaSettings, topics: Topics, png: Path, *more: str) -> int:
    return cli.main(
        [
            "report",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--topic-counts",
            topics.counts,
            "--png",
            str(png),
            *more,
        ]
    )


def test_report_draws_the_latest_value_of_each_window(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    produce(
        kafka,
        topics.counts,
        [
            window_record(0, rows=8, speed=150),
            window_record(1, rows=5, speed=160),
            window_record(2, rows=3, speed=170),
            window_record(2, rows=12, speed=199),  # the window changed: this is its value now
            ("garbage", "not a window"),
        ],
    )
    png = tmp_path / "w.png"
    assert report(kafka, topics, png) == 0

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.imread(png).shape == (600, 1200, 4)
    out, err = capsys.readouterr()
    assert out == (
        f"{topics.counts}: 3 windows from 2026-11-26 02:00:00 to 2026-11-26 02:17:00 UTC; "
        "the newest window (02:02:00-02:17:00) holds 12 alerts; 1 record was not a window's "
        f"JSON; picture in {png}\n"
    )
    assert err == ""


def test_an_empty_topic_gives_an_empty_chart(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "empty.png"
    assert report(kafka, topics, png) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out == f"{topics.counts}: no windows; picture in {png}\n"


def test_a_missing_topic_is_one_line_and_exit_1(
    kafka: KafkaSettings, topics: Topics, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = Topics(counts=f"{topics.counts}-missing")
    png = tmp_path / "w.png"
    assert report(kafka, missing, png, "--timeout", "10") == 1
    out, err = capsys.readouterr()
    assert out == ""
    name = missing.counts
    assert err == f"carstream report: cannot read {name}: topic {name} does not exist\n"
    assert not png.exists()
    admin = TopicAdmin(kafka)
    try:
        assert name not in admin.client.list_topics(timeout=10).topics, "report created it"
    finally:
        admin.close()


def test_report_without_png_prints_its_usage_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", "--bootstrap-servers", "localhost:9092"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: carstream report")
    assert "--png PATH" in err
    assert err.strip().endswith("error: the following arguments are required: --png")
