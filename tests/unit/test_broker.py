"""The embedded broker's configuration and its command line, without starting a JVM."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest

from carstream import broker, cli


def test_cluster_ids_are_kraft_uuids() -> None:
    ids = {broker.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_server_properties_describe_one_combined_node(tmp_path: Path) -> None:
    node = broker.EmbeddedBroker(tmp_path, properties={"num.partitions": "3"})
    node.data_dir, node.port, node.controller_port = tmp_path, 19092, 19093
    properties = node.server_properties()
    assert properties["process.roles"] == "broker,controller"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert properties["log.dirs"] == str(tmp_path / "kafka-data")
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["transaction.state.log.min.isr"] == "1"
    assert properties["num.partitions"] == "3"
    assert node.bootstrap_servers == "127.0.0.1:19092"


def test_an_unstarted_broker_has_no_address() -> None:
    with pytest.raises(broker.BrokerError, match="not started"):
        _ = broker.EmbeddedBroker().bootstrap_servers


def test_a_bad_heap_size_is_refused() -> None:
    with pytest.raises(ValueError, match="JVM size"):
        broker.EmbeddedBroker(heap="lots")


def test_port_probe_sees_a_listener() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        taken = server.getsockname()[1]
        assert not broker.port_is_free("127.0.0.1", taken)
    assert broker.port_is_free("127.0.0.1", broker.free_port())


def test_a_port_whose_old_connections_linger_in_time_wait_is_free() -> None:
    """A stopped broker's port, with connections of its clients in TIME_WAIT, can be bound by
    the next broker at once (Kafka binds with SO_REUSEADDR): the probe must agree."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Kafka's listener
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server side closes first: its end goes to TIME_WAIT
            client.recv(1)
    with socket.socket() as plain, pytest.raises(OSError):  # what the probe used to do
        plain.bind(("127.0.0.1", port))
    assert broker.port_is_free("127.0.0.1", port)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["broker", "--port", "70000"], "must be within 0..65535"),
        (["broker", "--port", "x"], "is not a port number"),
        (["broker", "--heap", "big"], "is not a JVM size"),
    ],
)
def test_bad_options_print_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage: carstream broker" in error
    assert message in error
