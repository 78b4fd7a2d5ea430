"""What a broker that others share needs on top of the local one: SASL logins and ACLs.

`BrokerSecurity` turns `EmbeddedBroker` into a broker for a cluster (the chart's standalone
Kafka mode runs it with `carstream broker --sasl-scram`):

- every client listener speaks SASL_PLAINTEXT with SCRAM-SHA-512 (`INTERNAL`, which brokers
  also use among themselves, and the optional `EXTERNAL` one for a NodePort), so every client
  has a user name and a password, and the password itself never crosses the network;
- the KRaft controller listener speaks SASL_PLAINTEXT with PLAIN, bound to loopback only: the
  only client it has is the broker in the same JVM (Kafka cannot use SCRAM there, because
  SCRAM credentials live in the metadata log that the controller serves);
- Kafka's `StandardAuthorizer` checks every request against the ACLs, nothing is allowed
  without one, and the admin identity is the only super user;
- the admin's SCRAM credential is written into the metadata log when the storage is
  formatted (StorageTool `--add-scram`), so the admin can log in on the first start and
  create every other user through the Admin API (`carstream kafka-setup`).

The admin password comes from the environment (CARSTREAM_KAFKA_PASSWORD, as for every carstream
Kafka client) and lands only in files of the broker's data folder, readable by its owner.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from carstream.config import ENV_PREFIX, KafkaSettings

SCRAM_MECHANISM = "SCRAM-SHA-512"
CONTROLLER_MECHANISM = "PLAIN"
SCRAM_ITERATIONS = 8192
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_LOGIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
INTERNAL = "INTERNAL"
EXTERNAL = "EXTERNAL"
CONTROLLER = "CONTROLLER"
USERNAME_ENV = ENV_PREFIX + "KAFKA_USERNAME"
PASSWORD_ENV = ENV_PREFIX + "KAFKA_PASSWORD"
_SALT_BYTES = 16
_USER_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


USER_NAME_RULE = "use letters, digits, '.', '_' and '-'"


def valid_user_name(name: str) -> bool:
    """A Kafka user name that carstream's plans, JAAS options and the StorageTool all accept."""
    return bool(_USER_NAME.match(name))


class SecurityError(ValueError):
    """The admin identity is missing or unusable."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """`host:port`, e.g. `localhost:30093`."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"{text!r} is not HOST:PORT with a port within 1..65535")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ExternalListener:
    """A second client listener for clients outside the cluster (a NodePort on Kubernetes):
    the broker listens on `port` and tells clients to connect to `advertised`."""

    port: int
    advertised: Address


@dataclass(frozen=True)
class BrokerSecurity:
    """The super user of a SASL + ACL broker."""

    admin_user: str
    admin_password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not valid_user_name(self.admin_user):
            raise SecurityError(f"admin user name {self.admin_user!r}: {USER_NAME_RULE}")
        if not self.admin_password:
            raise SecurityError("the admin password is empty")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> BrokerSecurity:
        user, password = environ.get(USERNAME_ENV, ""), environ.get(PASSWORD_ENV, "")
        if not user or not password:
            raise SecurityError(
                f"set {USERNAME_ENV} and {PASSWORD_ENV} to the admin identity (the super user "
                "that creates topics, users and ACLs)"
            )
        return cls(user, password)

    @property
    def principal(self) -> str:
        return f"User:{self.admin_user}"

    def client_settings(self, bootstrap_servers: str) -> KafkaSettings:
        """How the admin logs in on the INTERNAL (or EXTERNAL) listener."""
        return KafkaSettings(
            bootstrap_servers=bootstrap_servers,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=SCRAM_MECHANISM,
            username=self.admin_user,
            password=self.admin_password,
        )

    def scram_jaas(self) -> str:
        """Login of the broker itself on its SCRAM listeners (inter-broker traffic)."""
        return jaas(SCRAM_LOGIN_MODULE, username=self.admin_user, password=self.admin_password)

    def controller_jaas(self) -> str:
        """PLAIN on the controller listener: the admin logs in, and is the only user."""
        return jaas(
            PLAIN_LOGIN_MODULE,
            username=self.admin_user,
            password=self.admin_password,
            **{f"user_{self.admin_user}": self.admin_password},
        )

    def format_argument(self, salt: bytes | None = None) -> str:
        """The value of StorageTool's `--add-scram` that bootstraps the admin's credential.

        Given as salt and salted password (both base64), so that a password with a comma, a
        bracket or a quote cannot break the tool's `key=value,...` syntax."""
        salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
        salted = scram_salted_password(self.admin_password, salt, SCRAM_ITERATIONS)
        fields = [
            f"name={self.admin_user}",
            f"iterations={SCRAM_ITERATIONS}",
            f'salt="{base64.b64encode(salt).decode()}"',
            f'saltedpassword="{base64.b64encode(salted).decode()}"',
        ]
        return f"{SCRAM_MECHANISM}=[{','.join(fields)}]"


def scram_salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802's SaltedPassword = Hi(password, salt, i): PBKDF2 with HMAC-SHA-512, as Kafka
    computes it (the UTF-8 bytes of the password, no SASLprep)."""
    return hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)


def jaas_quote(value: str) -> str:
    """A JAAS option value in double quotes (Kafka's parser reads backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def jaas(module: str, **options: str) -> str:
    settings = " ".join(f"{key}={jaas_quote(value)}" for key, value in options.items())
    return f"{module} required {settings};"


def listener_properties(
    security: BrokerSecurity,
    *,
    bind_host: str,
    port: int,
    advertised: Address,
    controller: Address,
    external: ExternalListener | None = None,
) -> dict[str, str]:
    """server.properties of the listeners, SASL and authorization of a secured node."""
    listeners = [f"{INTERNAL}://{bind_host}:{port}"]
    advertised_listeners = [f"{INTERNAL}://{advertised}"]
    protocols = [f"{INTERNAL}:SASL_PLAINTEXT", f"{CONTROLLER}:SASL_PLAINTEXT"]
    scram_listeners = [INTERNAL]
    if external is not None:
        listeners.append(f"{EXTERNAL}://{bind_host}:{external.port}")
        advertised_listeners.append(f"{EXTERNAL}://{external.advertised}")
        protocols.append(f"{EXTERNAL}:SASL_PLAINTEXT")
        scram_listeners.append(EXTERNAL)
    listeners.append(f"{CONTROLLER}://{controller}")
    properties = {
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised_listeners),
        "listener.security.protocol.map": ",".join(protocols),
        "inter.broker.listener.name": INTERNAL,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        "sasl.mechanism.controller.protocol": CONTROLLER_MECHANISM,
        "authorizer.class.name": STANDARD_AUTHORIZER,
        "super.users": security.principal,
        "allow.everyone.if.no.acl.found": "false",
    }
    for name in scram_listeners:
        prefix = f"listener.name.{name.lower()}"
        properties[f"{prefix}.sasl.enabled.mechanisms"] = SCRAM_MECHANISM
        properties[f"{prefix}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config"] = security.scram_jaas()
    prefix = f"listener.name.{CONTROLLER.lower()}"
    properties[f"{prefix}.sasl.enabled.mechanisms"] = CONTROLLER_MECHANISM
    properties[f"{prefix}.{CONTROLLER_MECHANISM.lower()}.sasl.jaas.config"] = (
        security.controller_jaas()
    )
    return properties


def properties_text(properties: Mapping[str, str]) -> str:
    """A Java properties file: values escaped so that backslashes, leading blanks and line
    breaks survive `java.util.Properties.load`."""
    lines = []
    for key, value in properties.items():
        escaped = (
            value.replace("\\", "\\\\")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\t", "\\t")
            .replace("\f", "\\f")
        )
        if escaped.startswith(" "):
            escaped = "\\" + escaped
        lines.append(f"{key}={escaped}")
    return "\n".join(lines) + "\n"
