"""The embedded KRaft broker: `carstream broker`, clean shutdown, no JVM left behind, reuse."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from carstream.broker import BrokerError, EmbeddedBroker
from carstream.broker_security import BrokerSecurity
from carstream.config import KafkaSettings
from carstream.kafka_admin import TopicAdmin
from carstream.kafka_setup import login_outcome
from tests.fixtures.kafka import consume, produce
from tests.integration.processes import (
    alive,
    descendants,
    kill_group,
    run_carstream,
    start_carstream,
    wait_until,
)

START_SECONDS = 90


def _bootstrap_line(log: Path, process: subprocess.Popen[bytes]) -> str:
    """The address `carstream broker` prints on its own line once the broker is ready."""

    def printed() -> bool:
        assert process.poll() is None, f"carstream broker exited:\n{log.read_text()}"
        return any(line.startswith("127.0.0.1:") for line in log.read_text().splitlines())

    wait_until(printed, START_SECONDS, "the bootstrap address")
    return next(line for line in log.read_text().splitlines() if line.startswith("127.0.0.1:"))


def test_cli_serves_clients_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    log = tmp_path / "broker.out"
    process = start_carstream(["broker", "--port", "0"], log)
    try:
        bootstrap = _bootstrap_line(log, process)
        jvms = descendants(process.pid)
        assert jvms, "the broker JVM should be a child of carstream broker"
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        admin = TopicAdmin(kafka)
        admin.create_topics(["cli-check"], partitions=1)
        admin.close()
        produce(kafka, "cli-check", [(b"k", b"hello")])
        assert [m.value() for m in consume(kafka, "cli-check")] == [b"hello"]

        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, log.read_text()
        assert not any(alive(pid) for pid in jvms), "the broker JVM outlived the command"
        assert "stopping" in log.read_text()
    finally:
        kill_group(process)


def test_no_jvm_survives_a_killed_parent(tmp_path: Path) -> None:
    log = tmp_path / "broker.out"
    # A data folder of the test's own: a killed parent cannot remove its temporary one.
    process = start_carstream(["broker", "--port", "0", "--data-dir", str(tmp_path / "kafka")], log)
    try:
        _bootstrap_line(log, process)
        jvms = descendants(process.pid)
        assert jvms
        process.kill()  # SIGKILL: no Python clean-up runs
        process.wait()
        wait_until(lambda: not any(alive(pid) for pid in jvms), 10, "the orphaned JVM to die")
    finally:
        kill_group(process)


def test_a_reused_data_dir_keeps_topics_and_records_across_ports(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    with EmbeddedBroker(data) as first:
        first_address = first.bootstrap_servers
        kafka = KafkaSettings(bootstrap_servers=first_address)
        admin = TopicAdmin(kafka)
        admin.create_topics(["kept"], partitions=2)
        admin.close()
        produce(kafka, "kept", [(str(i).encode(), f"v{i}".encode()) for i in range(10)])
    assert (data / "broker.log").exists()
    with EmbeddedBroker(data) as second:
        assert second.bootstrap_servers != first_address
        kafka = KafkaSettings(bootstrap_servers=second.bootstrap_servers)
        values = sorted(m.value() for m in consume(kafka, "kept"))
        assert values == sorted(f"v{i}".encode() for i in range(10))


def test_a_port_in_use_is_a_clear_error(kafka_broker: EmbeddedBroker) -> None:
    started = time.monotonic()
    result = run_carstream(["broker", "--port", str(kafka_broker.port)], timeout=60)
    assert result.returncode == 1
    assert f"--port {kafka_broker.port} is in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_a_secured_broker_keeps_its_admin_across_restarts_and_refuses_another(
    tmp_path: Path,
) -> None:
    """`carstream broker --sasl-scram` as the chart runs it (log on stderr), then its data
    folder reused: the admin formatted into it still logs in, another password does not."""
    data, log = tmp_path / "kafka", tmp_path / "broker.out"
    admin = {"CARSTREAM_KAFKA_USERNAME": "admin", "CARSTREAM_KAFKA_PASSWORD": "first-secret"}
    command = ["broker", "--port", "0", "--sasl-scram", "--console-log", "--data-dir", str(data)]
    process = start_carstream(command, log, env=admin)
    try:
        bootstrap = _bootstrap_line(log, process)
        security = BrokerSecurity("admin", "first-secret")
        assert login_outcome(security.client_settings(bootstrap), timeout=15) is True
        wrong = replace(security.client_settings(bootstrap), password="guess")
        assert login_outcome(wrong, timeout=15) is False
        admin_topics = TopicAdmin(security.client_settings(bootstrap))
        admin_topics.create_topics(["kept-secured"], partitions=1)
        admin_topics.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, log.read_text()
    finally:
        kill_group(process)
    assert "Kafka Server started" in log.read_text(), "the broker's log goes to stderr"
    assert not (data / "broker.log").exists()
    assert (data / "server.properties").stat().st_mode & 0o077 == 0, (
        "owner-only: it holds a password"
    )

    with EmbeddedBroker(data, security=security) as again:
        topics = TopicAdmin(security.client_settings(again.bootstrap_servers))
        assert topics.partitions("kept-secured") == [0]
        topics.close()

    other = EmbeddedBroker(data, security=BrokerSecurity("admin", "second-secret"))
    with pytest.raises(BrokerError, match="refuses the admin's login"):
        other.start()
    assert not other.is_running()
