"""A real Prometheus scrapes a short `carstream run`: every stage metric has samples, the lag
goes back to 0 once the input is drained, dead letters count the garbage sent, the stages'
consumer groups show lag 0 to a Kafka client, every dashboard query returns data, the run logs
JSON and draws its windows."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from carstream import consumer_groups
from carstream.broker import EmbeddedBroker
from carstream.config import KafkaSettings, Topics
from carstream.kafka_admin import TopicAdmin, read_to_end
from carstream.windows_chart import WindowCounts
from tests.fixtures.kafka import produce, unique_topics
from tests.fixtures.kube import free_ports
from tests.fixtures.prometheus import Prometheus
from tests.integration.processes import kill_group, start_carstream, wait_until
from tests.monitoring.dashboard import DEFAULT_VARIABLES, metric_names, queries, substitute
from tests.unit.messages import UNKNOWN_CAR, as_json, sensor_event

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = "observed"
EVENTS = 2_000
GARBAGE: dict[str, list[str]] = {
    "malformed_json": ["not json", "{", "[1, 2]"],
    "missing_field": [as_json({k: v for k, v in sensor_event().items() if k != "speed"})] * 2,
    "out_of_range": [as_json(sensor_event(speed=999))],
    "unknown_car": [as_json(sensor_event(car_id=UNKNOWN_CAR))] * 2,
}
QUERIES = ("enrich-detect", "count", "count-dead-letters")  # carstream run fuses enrich, detect
STAGE_METRICS = ("carstream_query_", "carstream_stage_", "carstream_alerts", "carstream_windows")
STAGE_METRICS += ("carstream_latest_window_", "carstream_generator_")


def documented_metrics() -> list[str]:
    """The metric names of docs/observability.md's table."""
    text = (ROOT / "docs" / "observability.md").read_text()
    return re.findall(r"^\| `(carstream_[a-z_]+)` \|", text, flags=re.MULTILINE)


@dataclass
class ObservedRun:
    kafka: KafkaSettings
    topics: Topics
    prometheus: Prometheus
    output: str
    exit_code: int
    windows_png: Path
    drained_at: float
    """Unix time when the input was drained, as Prometheus saw it."""

    # Queries at the time the input was drained: once the run has stopped, Prometheus marks
    # its series stale.
    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.prometheus.query(expr, at=self.drained_at)

    def value(self, expr: str) -> float | None:
        return self.prometheus.value(expr, at=self.drained_at)


@pytest.fixture(scope="module")
def observed(
    kafka_broker: EmbeddedBroker,
    prometheus: Prometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ObservedRun]:
    """Runs the pipeline on the test broker until the generator's EVENTS and the garbage are
    drained and Prometheus has scraped that, then stops it with SIGTERM."""
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)
    topics = unique_topics(kafka, "observability")
    folder = tmp_path_factory.mktemp("observed")
    (port,) = free_ports(1)
    prometheus.start([f"127.0.0.1:{port}"])
    topic_flags = [
        f"--topic-{role}={name}"
        for role, name in zip(
            ("sensors", "enriched", "alerts", "counts", "dlq"), topics.all(), strict=True
        )
    ]
    log = folder / "run.out"
    png = folder / "windows.png"
    process = start_carstream(
        [
            "run",
            "--state-dir",
            str(folder / "state"),
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            *topic_flags,
            "--pipeline",
            PIPELINE,
            "--metrics-port",
            str(port),
            "--log-format",
            "json",
            "--windows-png",
            str(png),
            # 20 s of input: many micro-batches of the counter, the later ones past its
            # first watermark.
            "--rate",
            "100",
            "--max-events",
            str(EVENTS),
            "--trigger-interval",
            "1 second",
            "--window",
            "1 minute",
            "--slide",
            "10 seconds",
        ],
        log,
    )
    try:
        wait_until(prometheus.targets_up, 180, "Prometheus to scrape carstream run")
        produce(
            kafka,
            topics.sensors,
            [(None, value) for values in GARBAGE.values() for value in values],
        )
        admin = TopicAdmin(kafka)
        enriched_all = f'sum(carstream_stage_records_total{{pipeline="{PIPELINE}",stage="enrich"}})'
        expected = EVENTS + sum(map(len, GARBAGE.values()))

        def read(query: str) -> float | None:
            return prometheus.value(
                f'sum(carstream_query_input_rows_total{{pipeline="{PIPELINE}",query="{query}"}})'
            )

        def drained() -> bool:
            """Every query has read all its topic holds (Kafka's end offsets), and the
            enrich stage has validated every record, as Prometheus last scraped them."""
            assert process.poll() is None, log.read_text()[-5000:]
            ends = admin.end_offsets(topics.all())
            return (
                prometheus.value(enriched_all) == expected
                and read("enrich-detect") == ends[topics.sensors]
                and read("count") == read("count-dead-letters") == ends[topics.alerts] > 0
            )

        wait_until(drained, 300, "the run to drain its input, as Prometheus sees it")
        drained_at = time.time()
        time.sleep(3)  # a few more scrapes of the drained state
        admin.close()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(120)
    finally:
        kill_group(process)
    yield ObservedRun(kafka, topics, prometheus, log.read_text(), exit_code, png, drained_at)


def test_the_run_stops_cleanly(observed: ObservedRun) -> None:
    assert observed.exit_code == 0, observed.output[-5000:]


def test_every_documented_metric_has_samples(observed: ObservedRun) -> None:
    names = documented_metrics()
    assert len(names) >= 19
    empty = [
        name
        for name in names
        if not observed.query(f'{{__name__=~"{name}(_count)?",pipeline="{PIPELINE}"}}')
    ]
    assert not empty, f"no samples of {empty}"


def test_lag_is_zero_after_draining(observed: ObservedRun) -> None:
    lags = observed.query(f'carstream_query_consumer_lag_records{{pipeline="{PIPELINE}"}}')
    partitions = {
        (s["metric"]["query"], s["metric"]["topic"], s["metric"]["partition"]) for s in lags
    }
    assert {query for query, _, _ in partitions} == set(QUERIES)
    assert len(partitions) == 2 * len(QUERIES)  # two partitions per topic
    assert all(float(sample["value"][1]) == 0 for sample in lags), lags


def test_dead_letters_count_the_garbage_by_reason(observed: ObservedRun) -> None:
    counted = observed.query(
        f'sum by (reason) (carstream_stage_dead_letters_total{{pipeline="{PIPELINE}",'
        'stage="enrich"})'
    )
    by_reason = {s["metric"]["reason"]: float(s["value"][1]) for s in counted}
    assert {reason: n for reason, n in by_reason.items() if n} == {
        reason: len(values) for reason, values in GARBAGE.items()
    }
    valid = observed.value(
        f'carstream_stage_records_total{{pipeline="{PIPELINE}",stage="enrich",outcome="valid"}}'
    )
    assert valid == EVENTS


def test_generator_and_windows_metrics_match_what_was_written(observed: ObservedRun) -> None:
    sent = observed.value(f'carstream_generator_events_sent_total{{pipeline="{PIPELINE}"}}')
    assert sent == EVENTS
    windows = WindowCounts.from_messages(
        message.value() for message in read_to_end(observed.kafka, observed.topics.counts)
    )
    updated = observed.value(f'carstream_windows_updated_total{{pipeline="{PIPELINE}"}}')
    assert updated is not None and updated >= len(windows) > 0
    newest = observed.value(
        f'carstream_latest_window_start_timestamp_seconds{{pipeline="{PIPELINE}"}}'
    )
    assert newest == max(w.start for w in windows.windows()).timestamp()


def test_the_stages_consumer_groups_show_lag_zero(observed: ObservedRun) -> None:
    t = observed.topics
    inputs = {"enrich-detect": t.sensors, "count": t.alerts, "count-dead-letters": t.alerts}
    for query, topic in inputs.items():
        lag = consumer_groups.group_lag(
            observed.kafka, consumer_groups.group_name(PIPELINE, query), [topic]
        )
        assert set(lag.committed) == set(lag.end), (query, lag)
        assert lag.total == 0, (query, lag)


def test_the_run_logs_json_lines(observed: ObservedRun) -> None:
    lines = [line for line in observed.output.splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records, observed.output[-3000:]
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    assert any("metrics at http://" in record["message"] for record in records)
    assert all(record.get("command") == "run" for record in records)
    assert all(record.get("pipeline") == PIPELINE for record in records)


def test_the_windows_picture_is_a_png_of_the_windows(observed: ObservedRun) -> None:
    data = observed.windows_png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = re.search(r"alert windows drawn in \S+ \((\d+) windows", observed.output)
    windows = WindowCounts.from_messages(
        message.value() for message in read_to_end(observed.kafka, observed.topics.counts)
    )
    assert drawn is not None, observed.output[-3000:]
    assert int(drawn.group(1)) == len(windows)


def test_every_dashboard_query_of_the_stages_returns_data(observed: ObservedRun) -> None:
    """The panels of the stages' and generator's metrics; those of the operator's and
    Kafka's are checked by promtool and against the metric names they select
    (tests/monitoring, tests/chart/test_monitoring.py)."""
    board = json.loads((ROOT / "charts/carstream/files/dashboard.json").read_text())
    variables = {**DEFAULT_VARIABLES, "pipeline": PIPELINE}
    checked, empty = 0, []
    for title, expr in queries(board):
        names = metric_names(expr)
        if not names or any(not n.startswith(STAGE_METRICS) for n in names):
            continue
        checked += 1
        if not observed.query(substitute(expr, variables)):
            empty.append((title, expr))
    assert checked >= 20
    assert not empty, f"panels without data: {empty}"
