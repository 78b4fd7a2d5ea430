"""A broker to share: SASL/SCRAM listeners, ACLs and the admin's bootstrap credential, as
properties and arguments (no JVM here; tests/integration/test_kafka_security.py runs them)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from carstream import broker, broker_security, cli
from carstream.broker_security import Address, BrokerSecurity, ExternalListener, SecurityError

ADMIN = BrokerSecurity("carstream-kafka-admin", "s3cret")


def rfc5802_hi(password: bytes, salt: bytes, iterations: int) -> bytes:
    """Hi() of RFC 5802, written out: U1 = HMAC(p, salt + INT(1)), Ui = HMAC(p, Ui-1), XOR."""
    block = hmac.new(password, salt + b"\x00\x00\x00\x01", hashlib.sha512).digest()
    result = bytearray(block)
    for _ in range(iterations - 1):
        block = hmac.new(password, block, hashlib.sha512).digest()
        result = bytearray(a ^ b for a, b in zip(result, block, strict=True))
    return bytes(result)


def test_the_admin_credential_is_bootstrapped_as_a_salted_password() -> None:
    salt = bytes(range(16))
    argument = ADMIN.format_argument(salt)
    mechanism, _, body = argument.partition("=")
    assert mechanism == "SCRAM-SHA-512"
    assert body.startswith("[") and body.endswith("]")
    fields = dict(field.split("=", 1) for field in body[1:-1].split(","))
    assert fields["name"] == "carstream-kafka-admin"
    assert fields["iterations"] == str(broker_security.SCRAM_ITERATIONS)
    assert base64.b64decode(fields["salt"].strip('"')) == salt
    expected = rfc5802_hi(b"s3cret", salt, broker_security.SCRAM_ITERATIONS)
    assert base64.b64decode(fields["saltedpassword"].strip('"')) == expected
    assert "s3cret" not in argument


def test_a_password_with_commas_and_quotes_cannot_break_the_format_argument() -> None:
    tricky = BrokerSecurity("admin", 'a,b]c"d=e')
    argument = tricky.format_argument()
    assert argument.count(",") == 3, "exactly four fields, whatever the password holds"
    assert 'a,b]c"d=e' not in argument


def pod_listeners(external: ExternalListener | None) -> dict[str, str]:
    """The listener properties of a broker pod, as the chart starts it."""
    return broker_security.listener_properties(
        ADMIN,
        bind_host="0.0.0.0",
        port=9094,
        advertised=Address("kafka-0.kafka-brokers.ns.svc", 9094),
        controller=Address("127.0.0.1", 9090),
        external=external,
    )


def test_secured_listeners_use_scram_for_clients_plain_for_the_controller_and_acls() -> None:
    properties = pod_listeners(ExternalListener(9095, Address("localhost", 30093)))
    assert properties["listeners"] == (
        "INTERNAL://0.0.0.0:9094,EXTERNAL://0.0.0.0:9095,CONTROLLER://127.0.0.1:9090"
    )
    assert properties["advertised.listeners"] == (
        "INTERNAL://kafka-0.kafka-brokers.ns.svc:9094,EXTERNAL://localhost:30093"
    )
    assert properties["listener.security.protocol.map"] == (
        "INTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT"
    )
    assert properties["inter.broker.listener.name"] == "INTERNAL"
    assert properties["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert properties["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert properties["listener.name.internal.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert properties["listener.name.external.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert properties["listener.name.controller.sasl.enabled.mechanisms"] == "PLAIN"
    assert properties["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert properties["super.users"] == "User:carstream-kafka-admin"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["listener.name.internal.scram-sha-512.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="carstream-kafka-admin" password="s3cret";'
    )
    assert properties["listener.name.controller.plain.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="carstream-kafka-admin" password="s3cret" '
        'user_carstream-kafka-admin="s3cret";'
    )


def test_without_an_external_listener_there_is_none() -> None:
    properties = pod_listeners(None)
    assert "EXTERNAL" not in properties["listeners"] + properties["listener.security.protocol.map"]
    assert not [key for key in properties if key.startswith("listener.name.external")]


def test_jaas_values_escape_quotes_and_backslashes() -> None:
    assert broker_security.jaas_quote('a"b\\c') == '"a\\"b\\\\c"'


def test_properties_text_survives_java_properties_escapes() -> None:
    text = broker_security.properties_text({"a": "x\\y", "b": " lead", "c": "line\nbreak"})
    assert text == "a=x\\\\y\nb=\\ lead\nc=line\\nbreak\n"


def test_the_admin_comes_from_the_environment_and_must_be_complete() -> None:
    found = BrokerSecurity.from_environment(
        {"CARSTREAM_KAFKA_USERNAME": "root", "CARSTREAM_KAFKA_PASSWORD": "pw"}
    )
    assert (found.admin_user, found.admin_password) == ("root", "pw")
    assert "pw" not in repr(found)
    with pytest.raises(SecurityError, match="set CARSTREAM_KAFKA_USERNAME and"):
        BrokerSecurity.from_environment({"CARSTREAM_KAFKA_USERNAME": "root"})
    with pytest.raises(SecurityError, match="letters, digits"):
        BrokerSecurity("a,b", "pw")


def test_a_secured_broker_listens_everywhere_and_advertises_its_name(tmp_path: Path) -> None:
    node = broker.EmbeddedBroker(
        tmp_path,
        host="0.0.0.0",
        advertised_host="kafka-0.brokers.ns.svc",
        security=ADMIN,
        properties={"auto.create.topics.enable": "false"},
    )
    node.data_dir, node.port, node.controller_port = tmp_path, 9094, 9090
    properties = node.server_properties()
    assert properties["listeners"] == "INTERNAL://0.0.0.0:9094,CONTROLLER://127.0.0.1:9090"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:9090"
    assert properties["advertised.listeners"] == "INTERNAL://kafka-0.brokers.ns.svc:9094"
    assert properties["auto.create.topics.enable"] == "false"
    assert node.bootstrap_servers == "kafka-0.brokers.ns.svc:9094"
    assert node.local_host == "127.0.0.1"
    assert node.admin_config() == {
        "bootstrap.servers": "127.0.0.1:9094",
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "carstream-kafka-admin",
        "sasl.password": "s3cret",
    }


def test_an_external_listener_needs_security() -> None:
    with pytest.raises(ValueError, match="needs security"):
        broker.EmbeddedBroker(external=ExternalListener(9095, Address("localhost", 30093)))


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["broker", "--sasl-scram"], {}, "--sasl-scram: set CARSTREAM_KAFKA_USERNAME and"),
        (
            ["broker", "--sasl-scram", "--external-port", "9095"],
            {"CARSTREAM_KAFKA_USERNAME": "a", "CARSTREAM_KAFKA_PASSWORD": "b"},
            "--external-port and --external-advertised go together",
        ),
        (
            ["broker", "--external-port", "9095", "--external-advertised", "localhost:30093"],
            {},
            "an external listener needs --sasl-scram",
        ),
        (["broker", "--external-advertised", "localhost"], {}, "is not HOST:PORT"),
        (["broker", "--override", "no-equals-sign"], {}, "is not KEY=VALUE"),
    ],
)
def test_bad_security_options_print_usage(
    argv: list[str],
    env: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CARSTREAM_KAFKA_USERNAME", raising=False)
    monkeypatch.delenv("CARSTREAM_KAFKA_PASSWORD", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage: carstream broker" in error
    assert message in error


def test_missing_broker_jars_are_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["broker", "--port", "0", "--jars-dir", str(tmp_path / "none")])
    assert code == 1
    error = capsys.readouterr().err
    assert f"no jars in {tmp_path / 'none'}" in error
    assert "point --jars-dir at the kafka-broker jars" in error
