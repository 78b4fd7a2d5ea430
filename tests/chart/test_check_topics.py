"""The `helm test` script (charts/carstream/files/check_topics.py) against a real Kafka broker."""

from __future__ import annotations

import os
import subprocess
import sys

from carstream.config import KafkaSettings, Topics
from tests.chart.helm import CHART
from tests.fixtures.kafka import produce

SCRIPT = CHART / "files" / "check_topics.py"


def check_topics(kafka: KafkaSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CARSTREAM_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_fails_while_a_topic_is_empty_and_passes_once_all_have_data(
    kafka: KafkaSettings, topics: Topics
) -> None:
    watched = [topics.sensors, topics.enriched, topics.alerts, topics.counts]
    produce(kafka, topics.sensors, [(b"1", b"{}")])
    produce(kafka, topics.enriched, [(b"1", b"{}")])
    produce(kafka, topics.alerts, [(b"1", b"{}")])

    waiting = check_topics(kafka, "--timeout", "6", *watched)
    assert waiting.returncode == 1, waiting.stdout + waiting.stderr
    assert f"still empty after 6s: {topics.counts}" in waiting.stdout

    produce(kafka, topics.counts, [(b"w", b"{}"), (b"w", b"{}")])
    done = check_topics(kafka, "--timeout", "30", *watched)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{topics.counts}=2" in done.stdout
    assert f"{topics.sensors}=1" in done.stdout


def test_a_missing_topic_counts_as_empty(kafka: KafkaSettings, topics: Topics) -> None:
    result = check_topics(kafka, "--timeout", "1", f"{topics.sensors}-never-created")
    assert result.returncode == 1
    assert f"{topics.sensors}-never-created=0" in result.stdout


def test_bad_arguments_print_usage(kafka: KafkaSettings) -> None:
    result = check_topics(kafka, "--timeout", "soon", "sensors-sample")
    assert result.returncode == 2
    assert "usage: check_topics" in result.stderr
    assert "Traceback" not in result.stderr
    result = check_topics(kafka)
    assert result.returncode == 2
    assert "usage: check_topics" in result.stderr
