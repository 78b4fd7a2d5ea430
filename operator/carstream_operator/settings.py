"""The operator's settings, all in one place: environment variables with defaults.

Each setting is the environment variable CARSTREAM_OPERATOR_<NAME>; the command line
(`carstream-operator --help`) overrides a few of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

ENV_PREFIX = "CARSTREAM_OPERATOR_"


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use."""


@dataclass(frozen=True)
class Settings:
    # Namespaces to watch; empty: all namespaces.
    namespaces: tuple[str, ...] = ()
    # Port of the Prometheus metrics (/metrics); 0 turns them off.
    metrics_port: int = 9090
    # Port of the stages' Prometheus metrics in their driver pods (container port `metrics`,
    # `carstream stage --metrics-port`); 0 turns them off.
    stage_metrics_port: int = 9464
    # Port of the liveness endpoint (/healthz); 0 turns it off.
    liveness_port: int = 8080
    # Every object is reconciled at least this often, even without events.
    resync_seconds: float = 60.0
    # Threads for Kubernetes API calls (the client is synchronous).
    api_threads: int = 8
    # Timeout of one Kubernetes API request.
    request_timeout_seconds: float = 30.0
    # What the SparkApplications run: the image's entry point and its Spark version.
    spark_version: str = "4.2.0"
    main_application_file: str = "local:///opt/carstream/main.py"
    # Where the Kafka CA Secret is mounted in driver and executor pods.
    kafka_ca_mount_path: str = "/etc/carstream/kafka-ca"
    # The operator's own Kafka user, to read stages' backlogs (spec.wake): a KafkaUser that
    # may only describe topics and groups. Empty: no SASL login (a plaintext dev cluster).
    # The security protocol and mechanism are each stage's own (spec.kafka).
    kafka_username: str = ""
    kafka_password: str = ""
    # A file with the password (a mounted Secret, read at every look; wins over the above).
    kafka_password_file: str = ""
    # The Kafka cluster CA in the operator's pod, for SSL listeners.
    kafka_ca_file: str = ""
    # The image's Spark user and group: driver and executor pods run as this uid (Pod Security
    # "restricted" wants a non-root uid; the carstream image's spark user is 185).
    spark_user_id: int = 185

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in fields(cls):
            name = ENV_PREFIX + setting.name.upper()
            raw = environ.get(name)
            if raw is None:
                continue
            default = getattr(cls, setting.name)
            values[setting.name] = _parse(name, raw, default)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        for name in ("metrics_port", "liveness_port", "stage_metrics_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise SettingsError(f"{name}: {port} is not a port (0-65535)")
        if self.resync_seconds <= 0:
            raise SettingsError(f"resync_seconds must be positive, not {self.resync_seconds}")
        if self.api_threads < 1:
            raise SettingsError(f"api_threads must be at least 1, not {self.api_threads}")
        if self.request_timeout_seconds <= 0:
            raise SettingsError("request_timeout_seconds must be positive")
        if self.spark_user_id < 1:
            raise SettingsError(
                f"spark_user_id must be a non-root uid (1 or more), not {self.spark_user_id}"
            )


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, tuple):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {type(default).__name__}") from None
    return raw
