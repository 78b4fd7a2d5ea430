"""Who may do what on Kafka, declared once: topics, SCRAM users and their ACLs.

The vocabulary is Strimzi's, so that the chart renders both Kafka modes from the same values:
a topic is a KafkaTopic's `spec` (`topicName`, `partitions`, `replicas`, `config`), a user's
`acls` are a KafkaUser's `spec.authorization.acls` (`resource: {type, name, patternType}`,
`operations`, optional `host` and `type`). In Strimzi mode the topic and user operators apply
those objects; in standalone mode `carstream kafka-setup` applies this plan (a YAML file the
chart puts in a ConfigMap) through Kafka's Admin API.

    topics:
      - {topicName: sensors-sample, partitions: 3, replicas: 1, config: {retention.ms: 86400000}}
    users:
      - name: carstream-enrich
        acls:
          - resource: {type: topic, name: sensors-sample, patternType: literal}
            operations: [Read, Describe]
    pruneUsersWithPrefix: carstream-    # optional: users with this prefix not listed are removed

Everything here is pure: parsing with clear errors, and the ACL bindings a user must have.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from carstream.broker_security import USER_NAME_RULE, valid_user_name

# Strimzi's names -> Kafka's. Strimzi's `cluster` resource is Kafka's CLUSTER, which
# librdkafka calls BROKER; its only name is `kafka-cluster`.
RESOURCE_TYPES: Mapping[str, ResourceType] = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "cluster": ResourceType.BROKER,
    "transactionalId": ResourceType.TRANSACTIONAL_ID,
}
PATTERN_TYPES: Mapping[str, ResourcePatternType] = {
    "literal": ResourcePatternType.LITERAL,
    "prefix": ResourcePatternType.PREFIXED,
}
OPERATIONS: Mapping[str, AclOperation] = {
    "All": AclOperation.ALL,
    "Read": AclOperation.READ,
    "Write": AclOperation.WRITE,
    "Create": AclOperation.CREATE,
    "Delete": AclOperation.DELETE,
    "Alter": AclOperation.ALTER,
    "Describe": AclOperation.DESCRIBE,
    "ClusterAction": AclOperation.CLUSTER_ACTION,
    "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS,
    "AlterConfigs": AclOperation.ALTER_CONFIGS,
    "IdempotentWrite": AclOperation.IDEMPOTENT_WRITE,
}
PERMISSIONS: Mapping[str, AclPermissionType] = {
    "allow": AclPermissionType.ALLOW,
    "deny": AclPermissionType.DENY,
}
CLUSTER_RESOURCE_NAME = "kafka-cluster"
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


class PlanError(ValueError):
    """The plan is not what `carstream kafka-setup` can apply; the message says where."""


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    replicas: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AclRule:
    """One KafkaUser ACL rule: some operations on one resource (pattern)."""

    resource_type: str
    name: str
    pattern_type: str
    operations: tuple[str, ...]
    host: str = "*"
    permission: str = "allow"

    def bindings(self, principal: str) -> set[AclBinding]:
        return {
            AclBinding(
                RESOURCE_TYPES[self.resource_type],
                self.name,
                PATTERN_TYPES[self.pattern_type],
                principal,
                self.host,
                OPERATIONS[operation],
                PERMISSIONS[self.permission],
            )
            for operation in self.operations
        }


@dataclass(frozen=True)
class UserPlan:
    name: str
    acls: tuple[AclRule, ...] = ()

    @property
    def principal(self) -> str:
        return f"User:{self.name}"

    def acl_bindings(self) -> set[AclBinding]:
        """Exactly the ACL bindings this user must have, one per operation."""
        return {binding for rule in self.acls for binding in rule.bindings(self.principal)}


@dataclass(frozen=True)
class AccessPlan:
    topics: tuple[TopicPlan, ...] = ()
    users: tuple[UserPlan, ...] = ()
    prune_users_with_prefix: str | None = None

    def user(self, name: str) -> UserPlan:
        for user in self.users:
            if user.name == name:
                return user
        raise KeyError(name)


# -- parsing ----------------------------------------------------------------------------------


def load_plan(path: Path) -> AccessPlan:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise PlanError(f"cannot read the plan {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise PlanError(f"the plan {path} is not YAML: {error}") from None
    return parse_plan(document)


def parse_plan(document: Any) -> AccessPlan:
    plan = _mapping(document, "the plan", {"topics", "users", "pruneUsersWithPrefix"})
    topics = tuple(
        _topic(item, f"topics[{index}]")
        for index, item in enumerate(_sequence(plan.get("topics", []), "topics"))
    )
    users = tuple(
        _user(item, f"users[{index}]")
        for index, item in enumerate(_sequence(plan.get("users", []), "users"))
    )
    _unique([topic.name for topic in topics], "topics", "topicName")
    _unique([user.name for user in users], "users", "name")
    prefix = plan.get("pruneUsersWithPrefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix):
        raise PlanError("pruneUsersWithPrefix: must be a non-empty string")
    for user in users:
        if prefix and not user.name.startswith(prefix):
            raise PlanError(
                f"user {user.name}: does not start with pruneUsersWithPrefix {prefix!r}, so it "
                "would not be managed consistently"
            )
    return AccessPlan(topics, users, prefix)


def _topic(item: Any, where: str) -> TopicPlan:
    topic = _mapping(item, where, {"topicName", "partitions", "replicas", "config"})
    name = _string(topic.get("topicName"), f"{where}.topicName")
    if not _TOPIC_NAME.match(name):
        raise PlanError(f"{where}.topicName: {name!r} is not a Kafka topic name")
    config = _mapping(topic.get("config", {}), f"{where}.config", None)
    return TopicPlan(
        name=name,
        partitions=_positive(topic.get("partitions"), f"{where}.partitions"),
        replicas=_positive(topic.get("replicas", 1), f"{where}.replicas"),
        config={str(key): _config_value(value) for key, value in config.items()},
    )


def _user(item: Any, where: str) -> UserPlan:
    user = _mapping(item, where, {"name", "acls"})
    name = _string(user.get("name"), f"{where}.name")
    if not valid_user_name(name):
        raise PlanError(f"{where}.name: {name!r}: {USER_NAME_RULE}")
    rules = _sequence(user.get("acls", []), f"{where}.acls")
    return UserPlan(name, tuple(_rule(rule, f"{where}.acls[{i}]") for i, rule in enumerate(rules)))


def _rule(item: Any, where: str) -> AclRule:
    rule = _mapping(item, where, {"resource", "operations", "host", "type"})
    resource = _mapping(rule.get("resource"), f"{where}.resource", {"type", "name", "patternType"})
    resource_type = _choice(resource.get("type"), RESOURCE_TYPES, f"{where}.resource.type")
    if resource_type == "cluster":
        name = CLUSTER_RESOURCE_NAME
        pattern = "literal"
    else:
        name = _string(resource.get("name"), f"{where}.resource.name")
        pattern = _choice(
            resource.get("patternType", "literal"), PATTERN_TYPES, f"{where}.resource.patternType"
        )
    operations = _sequence(rule.get("operations"), f"{where}.operations")
    if not operations:
        raise PlanError(f"{where}.operations: name at least one operation")
    return AclRule(
        resource_type=resource_type,
        name=name,
        pattern_type=pattern,
        operations=tuple(
            _choice(op, OPERATIONS, f"{where}.operations[{i}]") for i, op in enumerate(operations)
        ),
        host=_string(rule.get("host", "*"), f"{where}.host"),
        permission=_choice(rule.get("type", "allow"), PERMISSIONS, f"{where}.type"),
    )


def _mapping(value: Any, where: str, allowed: set[str] | None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PlanError(f"{where}: expected a mapping, got {type(value).__name__}")
    if allowed is not None and (unknown := sorted(set(value) - allowed)):
        raise PlanError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {sorted(allowed)}")
    return value


def _sequence(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise PlanError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise PlanError(f"{where}: expected a non-empty string")
    return value


def _positive(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _choice(value: Any, allowed: Mapping[str, Any], where: str) -> str:
    if value not in allowed:
        raise PlanError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _config_value(value: Any) -> str:
    """Topic configs as Kafka wants them: strings; 86400000.0 (YAML through JSON) is 86400000."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _unique(names: Sequence[str], where: str, key: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise PlanError(f"{where}: {key} {name!r} appears twice")
        seen.add(name)
