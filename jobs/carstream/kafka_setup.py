"""`carstream kafka-setup`: make a broker hold the topics, SCRAM users and ACLs of a plan.

What Strimzi's topic and user operators do for KafkaTopic and KafkaUser objects, done once by
a command, through Kafka's Admin API (confluent-kafka's AdminClient): `create_topics`,
`create_partitions` and `incremental_alter_configs` for topics, `alter_user_scram_credentials`
for users, `create_acls` / `delete_acls` for their ACLs. The plan is carstream.kafka_access's
(the chart renders it from the values of its KafkaTopic and KafkaUser objects).

It converges: a second run changes nothing and says so. A planned user keeps its credential
while its password still logs in (checked with a real login), its ACLs become exactly the
planned ones, and with `pruneUsersWithPrefix` the users with that prefix that the plan no
longer lists lose their credentials and ACLs. What Kafka cannot do (fewer partitions, another
replication factor) is reported and makes the command fail after everything else is applied.

The command logs in as the admin (CARSTREAM_KAFKA_USERNAME / CARSTREAM_KAFKA_PASSWORD, a super
user); each planned user's password is the file of the user's name in --passwords-dir (on
Kubernetes: the `password` keys of the users' Secrets, projected into one folder).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from carstream.broker_security import SCRAM_ITERATIONS
from carstream.config import KafkaSettings, positive_float_arg
from carstream.kafka_access import AccessPlan, PlanError, TopicPlan, UserPlan, load_plan
from carstream.kafka_admin import TopicAdmin, client_config

DEFAULT_WAIT_SECONDS = 300.0
REQUEST_TIMEOUT = 30.0
LOGIN_TIMEOUT = 15.0
MECHANISM = ScramMechanism.SCRAM_SHA_512


class SetupError(RuntimeError):
    """The broker cannot be reached, refuses the admin, or an Admin API call failed."""


@dataclass
class Report:
    """What a run changed, and what it could not."""

    changes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def change(self, text: str) -> None:
        self.changes.append(text)

    def problem(self, text: str) -> None:
        self.problems.append(text)


def read_passwords(folder: Path | None, users: Sequence[UserPlan]) -> dict[str, str]:
    """Each user's password: the whole content of the file `folder/<user name>`."""
    if not users:
        return {}
    if folder is None:
        raise PlanError("the plan has users: give --passwords-dir, a file per user")
    passwords = {}
    for user in users:
        path = folder / user.name
        try:
            passwords[user.name] = path.read_text()
        except OSError as error:
            raise PlanError(f"user {user.name}: cannot read {path}: {error.strerror}") from None
        if not passwords[user.name]:
            raise PlanError(f"user {user.name}: {path} is empty")
    return passwords


def _result(future: Any, what: str) -> Any:
    try:
        return future.result(timeout=REQUEST_TIMEOUT)
    except KafkaException as error:
        raise SetupError(f"{what}: {error.args[0].str()}") from None


def _name(value: Enum | str | int) -> str:
    return value.name if isinstance(value, Enum) else str(value)


def _describe(binding: AclBinding) -> str:
    return (
        f"{binding.principal} {_name(binding.permission_type)} {_name(binding.operation)} on "
        f"{_name(binding.restype).lower()} {binding.name} "
        f"({_name(binding.resource_pattern_type)})"
        + ("" if binding.host == "*" else f" from {binding.host}")
    )


def principal_filter(principal: str | None) -> AclBindingFilter:
    """Every ACL binding of `principal` (of every principal: None)."""
    # None matches anything (confluent-kafka's annotations say str, its code takes None).
    return AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        principal,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )


def _exact_filter(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    )


class KafkaSetup:
    """Applies an AccessPlan to one cluster as its admin."""

    def __init__(self, admin: KafkaSettings, passwords: Mapping[str, str]) -> None:
        if not admin.username:
            raise PlanError("no admin user: set CARSTREAM_KAFKA_USERNAME and ..._PASSWORD")
        self.admin = admin
        self.passwords = dict(passwords)
        self.client = AdminClient(client_config(admin))

    # -- the broker ------------------------------------------------------------------------

    def wait_for_broker(self, seconds: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Returns once the broker answers the admin; fails at once when it refuses the login."""
        deadline = time.monotonic() + seconds
        last = "no answer yet"
        while True:
            outcome = login_outcome(self.admin, timeout=min(LOGIN_TIMEOUT, max(seconds, 1.0)))
            if outcome is True:
                return
            if outcome is False:
                raise SetupError(
                    f"the broker at {self.admin.bootstrap_servers} refuses the admin "
                    f"{self.admin.username}: check CARSTREAM_KAFKA_USERNAME and "
                    "CARSTREAM_KAFKA_PASSWORD"
                )
            last = outcome
            if time.monotonic() >= deadline:
                raise SetupError(
                    f"the broker at {self.admin.bootstrap_servers} did not answer within "
                    f"{seconds:g} s: {last}"
                )
            sleep(2.0)

    # -- applying --------------------------------------------------------------------------

    def apply(self, plan: AccessPlan) -> Report:
        report = Report()
        self._topics(plan.topics, report)
        for user in plan.users:
            self._user(user, report)
            self._acls(user.principal, user.acl_bindings(), report)
        if plan.prune_users_with_prefix:
            self._prune(plan, plan.prune_users_with_prefix, report)
        return report

    def _topics(self, topics: Sequence[TopicPlan], report: Report) -> None:
        existing = self.client.list_topics(timeout=REQUEST_TIMEOUT).topics
        creator = TopicAdmin(self.admin, timeout=REQUEST_TIMEOUT)
        try:
            for topic in topics:
                found = existing.get(topic.name)
                if found is None or found.error is not None:
                    creator.create_topics(
                        [topic.name],
                        partitions=topic.partitions,
                        replication_factor=topic.replicas,
                        config=dict(topic.config),
                    )
                    report.change(f"topic {topic.name}: created, {topic.partitions} partitions")
                    continue
                self._partitions(topic, found, report)
                self._topic_config(topic, report)
        finally:
            creator.close()

    def _partitions(self, topic: TopicPlan, found: Any, report: Report) -> None:
        count = len(found.partitions)
        replicas = {len(partition.replicas) for partition in found.partitions.values()}
        if replicas != {topic.replicas}:
            report.problem(
                f"topic {topic.name}: has {sorted(replicas)} replicas per partition, the plan "
                f"says {topic.replicas}; Kafka does not change that through this command"
            )
        if count > topic.partitions:
            report.problem(
                f"topic {topic.name}: has {count} partitions, the plan says {topic.partitions}; "
                "Kafka cannot remove partitions (delete the topic, or plan at least "
                f"{count})"
            )
        elif count < topic.partitions:
            futures = self.client.create_partitions([NewPartitions(topic.name, topic.partitions)])
            _result(futures[topic.name], f"topic {topic.name}: adding partitions")
            report.change(f"topic {topic.name}: partitions {count} -> {topic.partitions}")

    def _topic_config(self, topic: TopicPlan, report: Report) -> None:
        if not topic.config:
            return
        resource = ConfigResource(ResourceType.TOPIC, topic.name)
        (future,) = self.client.describe_configs([resource]).values()
        current: Mapping[str, ConfigEntry] = _result(future, f"topic {topic.name}: configs")
        differing = {
            key: value
            for key, value in topic.config.items()
            if key not in current or current[key].value != value
        }
        if not differing:
            return
        changes = [
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in differing.items()
        ]
        altered = ConfigResource(ResourceType.TOPIC, topic.name, incremental_configs=changes)
        (future,) = self.client.incremental_alter_configs([altered]).values()
        _result(future, f"topic {topic.name}: altering configs")
        for key, value in differing.items():
            before = current[key].value if key in current else "unset"
            report.change(f"topic {topic.name}: {key} {before} -> {value}")

    def _scram_users(self) -> dict[str, set[ScramMechanism]]:
        """Every user with a SCRAM credential, and its mechanisms."""
        described = _result(self.client.describe_user_scram_credentials(), "listing SCRAM users")
        return {
            name: {info.mechanism for info in description.scram_credential_infos}
            for name, description in described.items()
        }

    def _user(self, user: UserPlan, report: Report) -> None:
        password = self.passwords[user.name]
        mechanisms = self._scram_users().get(user.name, set())
        if MECHANISM in mechanisms:
            user_login = replace(self.admin, username=user.name, password=password)
            if login_outcome(user_login, timeout=LOGIN_TIMEOUT) is True:
                return
        upsert = UserScramCredentialUpsertion(
            user.name, ScramCredentialInfo(MECHANISM, SCRAM_ITERATIONS), password.encode("utf-8")
        )
        futures = self.client.alter_user_scram_credentials([upsert])
        _result(futures[user.name], f"user {user.name}: setting its SCRAM credential")
        report.change(
            f"user {user.name}: {'password changed' if mechanisms else 'created'} "
            f"({MECHANISM.name.replace('_', '-')})"
        )

    def _acls(self, principal: str, wanted: set[AclBinding], report: Report) -> None:
        found = self.client.describe_acls(principal_filter(principal))
        existing = set(_result(found, f"{principal}: listing ACLs"))
        missing = sorted(wanted - existing, key=_describe)
        extra = sorted(existing - wanted, key=_describe)
        if missing:
            futures = self.client.create_acls(missing)
            for binding in missing:
                _result(futures[binding], f"ACL {_describe(binding)}")
                report.change(f"ACL {_describe(binding)}: created")
        if extra:
            filters = [_exact_filter(binding) for binding in extra]
            for binding_filter, future in self.client.delete_acls(filters).items():
                _result(future, f"removing ACL {binding_filter}")
            for binding in extra:
                report.change(f"ACL {_describe(binding)}: removed")

    def _prune(self, plan: AccessPlan, prefix: str, report: Report) -> None:
        keep = {user.name for user in plan.users} | {self.admin.username}
        for name, mechanisms in sorted(self._scram_users().items()):
            if name.startswith(prefix) and name not in keep:
                deletions: list[UserScramCredentialAlteration] = [
                    UserScramCredentialDeletion(name, mechanism) for mechanism in sorted(mechanisms)
                ]
                futures = self.client.alter_user_scram_credentials(deletions)
                _result(futures[name], f"user {name}: removing its SCRAM credentials")
                report.change(f"user {name}: removed (not in the plan)")
        every = _result(self.client.describe_acls(principal_filter(None)), "listing ACLs")
        orphaned = sorted(
            {
                binding.principal
                for binding in every
                if binding.principal.startswith(f"User:{prefix}")
                and binding.principal.removeprefix("User:") not in keep
            }
        )
        for principal in orphaned:
            self._acls(principal, set(), report)


def login_outcome(kafka: KafkaSettings, timeout: float) -> bool | str:
    """True when `kafka`'s credentials log in and the broker answers, False when the broker
    refuses them, otherwise the error that prevented an answer (broker not up yet...)."""
    refused: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.code() == KafkaError._AUTHENTICATION:
            refused.append(error)

    config: dict[str, Any] = {**client_config(kafka), "error_cb": on_error}
    client = AdminClient(config)
    deadline = time.monotonic() + timeout
    while True:
        # Short requests: librdkafka reports a refused login only through the error callback,
        # which poll() serves, while the request itself would wait out its whole timeout.
        slice_seconds = max(min(1.0, deadline - time.monotonic()), 0.1)
        try:
            client.list_topics(timeout=slice_seconds)
        except KafkaException as error:
            client.poll(0)
            if refused:
                return False
            if time.monotonic() >= deadline:
                return str(error.args[0].str())
            continue
        client.poll(0)
        return not refused


# -- `carstream kafka-setup` ------------------------------------------------------------------


def add_cli(commands: Any) -> None:
    parser = commands.add_parser(
        "kafka-setup",
        help="create the topics, SCRAM users and ACLs of a plan on a Kafka cluster",
        description=(__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--plan",
        type=Path,
        required=True,
        help="YAML file of topics, users and ACLs (see above; the chart renders it)",
    )
    parser.add_argument(
        "--passwords-dir",
        type=Path,
        help="folder with one file per planned user, named after it, holding its password",
    )
    parser.add_argument(
        "--wait",
        type=positive_float_arg,
        default=DEFAULT_WAIT_SECONDS,
        metavar="SECONDS",
        help=f"how long to wait for the broker to answer (default: {DEFAULT_WAIT_SECONDS:g})",
    )
    KafkaSettings.add_arguments(parser)
    parser.set_defaults(handler=lambda args: main(args, parser))


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    admin = KafkaSettings.from_args(args)
    try:
        plan = load_plan(args.plan)
        passwords = read_passwords(args.passwords_dir, plan.users)
        setup = KafkaSetup(admin, passwords)
    except PlanError as error:
        parser.error(str(error))
    try:
        setup.wait_for_broker(args.wait)
        report = setup.apply(plan)
    except (SetupError, KafkaException) as error:
        print(f"carstream kafka-setup: {error}", file=sys.stderr)
        return 1
    for change in report.changes:
        print(f"carstream kafka-setup: {change}", flush=True)
    for problem in report.problems:
        print(f"carstream kafka-setup: cannot apply: {problem}", file=sys.stderr)
    acls = sum(len(user.acl_bindings()) for user in plan.users)
    counts = f"{len(plan.topics)} topics, {len(plan.users)} users, {acls} ACLs"
    changed = f"{len(report.changes)} changes" if report.changes else "no change"
    if report.problems:
        print(f"carstream kafka-setup: {changed}; {len(report.problems)} not applicable")
        return 1
    print(f"carstream kafka-setup: {changed}; as planned: {counts}")
    return 0
