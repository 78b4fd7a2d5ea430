"""The chart's standalone Kafka users on a real secured broker: the plan the chart renders,
applied by `carstream kafka-setup` as the admin, with a random password per user."""

from __future__ import annotations

import secrets
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from carstream.broker import EmbeddedBroker
from carstream.config import KafkaSettings
from carstream.kafka_access import AccessPlan, parse_plan
from tests.chart import helm
from tests.fixtures.kafka import ADMIN_USER, scram_login
from tests.integration.processes import run_carstream


@dataclass
class Setup:
    """The chart's plan, the users' passwords, and how to run `carstream kafka-setup`."""

    broker: EmbeddedBroker
    document: dict[str, Any]
    plan: AccessPlan
    folder: Path
    first_output: str = ""

    @property
    def passwords(self) -> Path:
        return self.folder / "passwords"

    def password(self, user: str) -> str:
        return (self.passwords / user).read_text()

    def login(self, role: str, password: str | None = None) -> KafkaSettings:
        user = f"carstream-{role}"
        return scram_login(self.broker, user, password or self.password(user))

    def run(
        self,
        document: dict[str, Any] | None = None,
        *,
        plan_file: Path | None = None,
        admin_password: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`carstream kafka-setup` of `document` (default: the chart's plan), as the admin."""
        if plan_file is None:
            plan_file = self.folder / f"plan-{uuid.uuid4().hex[:6]}.yaml"
            plan_file.write_text(yaml.safe_dump(document or self.document))
        assert self.broker.security is not None
        env = {
            "CARSTREAM_KAFKA_USERNAME": ADMIN_USER,
            "CARSTREAM_KAFKA_PASSWORD": admin_password or self.broker.security.admin_password,
        }
        return run_carstream(
            [
                "kafka-setup",
                "--plan",
                str(plan_file),
                "--passwords-dir",
                str(self.passwords),
                "--bootstrap-servers",
                self.broker.bootstrap_servers,
                "--kafka-security-protocol",
                "SASL_PLAINTEXT",
                "--kafka-sasl-mechanism",
                "SCRAM-SHA-512",
                "--wait",
                "60",
            ],
            env=env,
        )


def chart_plan() -> dict[str, Any]:
    """The plan ConfigMap of the chart in standalone mode."""
    objects = helm.render((helm.STANDALONE_VALUES,))
    (config_map,) = [
        obj
        for obj in helm.by_kind(objects, "ConfigMap")
        if obj["metadata"]["name"] == "carstream-kafka-setup"
    ]
    document: dict[str, Any] = yaml.safe_load(config_map["data"]["plan.yaml"])
    return document


def apply_chart_plan(broker: EmbeddedBroker, folder: Path) -> Setup:
    """The chart's plan applied to `broker`, with the users' passwords in `folder`."""
    document = chart_plan()
    plan = parse_plan(document)
    (folder / "passwords").mkdir()
    for user in plan.users:
        (folder / "passwords" / user.name).write_text(secrets.token_urlsafe(24))
    applied = Setup(broker, document, plan, folder)
    first = applied.run()
    assert first.returncode == 0, first.stdout + first.stderr
    applied.first_output = first.stdout
    return applied
