"""The access plan of `carstream kafka-setup`: Strimzi's vocabulary in, Kafka ACL bindings out."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from carstream import cli, kafka_access
from carstream.kafka_access import PlanError, parse_plan

PLAN: dict[str, Any] = {
    "topics": [
        {
            "topicName": "sensors-sample",
            "partitions": 3,
            "replicas": 1,
            "config": {"retention.ms": 86400000.0, "min.insync.replicas": 1},
        }
    ],
    "users": [
        {
            "name": "cs-enrich",
            "acls": [
                {
                    "resource": {
                        "type": "topic",
                        "name": "sensors-sample",
                        "patternType": "literal",
                    },
                    "operations": ["Read", "Describe"],
                },
                {
                    "resource": {"type": "group", "name": "spark-", "patternType": "prefix"},
                    "operations": ["Read"],
                },
                {"resource": {"type": "cluster"}, "operations": ["IdempotentWrite"]},
                {
                    "resource": {"type": "transactionalId", "name": "tx"},
                    "operations": ["Write"],
                    "type": "deny",
                    "host": "10.0.0.1",
                },
            ],
        }
    ],
    "pruneUsersWithPrefix": "cs-",
}


def binding(
    restype: ResourceType,
    name: str,
    pattern: ResourcePatternType,
    operation: AclOperation,
    permission: AclPermissionType = AclPermissionType.ALLOW,
    host: str = "*",
) -> AclBinding:
    return AclBinding(restype, name, pattern, "User:cs-enrich", host, operation, permission)


def test_a_plan_reads_topics_users_and_their_acl_bindings() -> None:
    plan = parse_plan(PLAN)
    (topic,) = plan.topics
    assert (topic.name, topic.partitions, topic.replicas) == ("sensors-sample", 3, 1)
    assert topic.config == {"retention.ms": "86400000", "min.insync.replicas": "1"}
    assert plan.prune_users_with_prefix == "cs-"
    user = plan.user("cs-enrich")
    assert user.principal == "User:cs-enrich"
    assert user.acl_bindings() == {
        binding(ResourceType.TOPIC, "sensors-sample", ResourcePatternType.LITERAL, op)
        for op in (AclOperation.READ, AclOperation.DESCRIBE)
    } | {
        binding(ResourceType.GROUP, "spark-", ResourcePatternType.PREFIXED, AclOperation.READ),
        binding(
            ResourceType.BROKER,
            "kafka-cluster",
            ResourcePatternType.LITERAL,
            AclOperation.IDEMPOTENT_WRITE,
        ),
        binding(
            ResourceType.TRANSACTIONAL_ID,
            "tx",
            ResourcePatternType.LITERAL,
            AclOperation.WRITE,
            AclPermissionType.DENY,
            "10.0.0.1",
        ),
    }


def _with(path: str, value: Any) -> dict[str, Any]:
    """PLAN with one value replaced, at a path like users.0.acls.0.operations."""
    plan = copy.deepcopy(PLAN)
    node: Any = plan
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return plan


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "the plan: expected a mapping, got list"),
        ({"topics": [], "extra": 1}, "the plan: unknown key(s) extra"),
        (_with("topics.0.partitions", 0), "topics[0].partitions: expected a positive integer"),
        (_with("topics.0.topicName", "bad name"), "is not a Kafka topic name"),
        (
            _with("users.0.acls.0.operations", ["Raed"]),
            "users[0].acls[0].operations[0]: 'Raed' is not one of All, Read, Write",
        ),
        (
            _with("users.0.acls.1.resource", {"type": "group", "name": "g", "patternType": "x"}),
            "users[0].acls[1].resource.patternType: 'x' is not one of literal, prefix",
        ),
        (
            _with("users.0.acls.0.resource", {"type": "queue", "name": "q"}),
            "users[0].acls[0].resource.type: 'queue' is not one of topic, group, cluster",
        ),
        (_with("users.0.acls.0.operations", []), "name at least one operation"),
        (_with("users.0.name", "other"), "does not start with pruneUsersWithPrefix 'cs-'"),
        (_with("users.0.name", "cs-a b"), "users[0].name: 'cs-a b': use letters, digits"),
        ({"topics": [PLAN["topics"][0], PLAN["topics"][0]]}, "topicName 'sensors-sample' appears"),
        ({"pruneUsersWithPrefix": ""}, "pruneUsersWithPrefix: must be a non-empty string"),
    ],
)
def test_a_bad_plan_says_where(document: Any, message: str) -> None:
    with pytest.raises(PlanError) as error:
        parse_plan(document)
    assert message in str(error.value)


def test_a_plan_file_that_is_not_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("topics: [unclosed\n")
    with pytest.raises(PlanError, match="is not YAML"):
        kafka_access.load_plan(path)
    with pytest.raises(PlanError, match="cannot read the plan"):
        kafka_access.load_plan(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["kafka-setup"], "the following arguments are required: --plan"),
        (["kafka-setup", "--plan", "{missing}"], "cannot read the plan"),
        (["kafka-setup", "--plan", "{plan}"], "the plan has users: give --passwords-dir"),
        (
            ["kafka-setup", "--plan", "{plan}", "--passwords-dir", "{tmp}"],
            "user cs-enrich: cannot read",
        ),
        (["kafka-setup", "--plan", "{plan}", "--wait", "-1"], "'-1' must be a positive number"),
    ],
)
def test_kafka_setup_usage_errors_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN))
    names = {"plan": str(plan), "missing": str(tmp_path / "none.yaml"), "tmp": str(tmp_path)}
    with pytest.raises(SystemExit) as exit_info:
        cli.main([arg.format(**names) for arg in argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage: carstream kafka-setup" in error
    assert message in error
