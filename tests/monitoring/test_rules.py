"""The alert rules (charts/carstream/files/prometheus-rules.yaml) checked and unit-tested by
promtool, and every alert covered by tests/monitoring/alerts_test.yaml."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from carstream import toolchain
from tests.chart.helm import run

RULES = toolchain.REPO_ROOT / "charts" / "carstream" / "files" / "prometheus-rules.yaml"
ALERT_TESTS = Path(__file__).resolve().parent / "alerts_test.yaml"
SEVERITIES = {"critical", "warning"}
ANNOTATIONS = {"summary", "description", "runbook"}


def rules() -> list[Mapping[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> dict[str, Mapping[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def alert_cases() -> list[tuple[str, list[Mapping[str, Any]]]]:
    """(alertname, exp_alerts) of every alert_rule_test of the test file."""
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    return [
        (case["alertname"], list(case.get("exp_alerts") or []))
        for test in tests
        for case in test.get("alert_rule_test") or []
    ]


def test_promtool_accepts_the_rules() -> None:
    result = run("promtool", "check", "rules", "--lint=all", "--lint-fatal", RULES, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = run("promtool", "test", "rules", ALERT_TESTS, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "FAILED" not in result.stdout


def test_the_unit_tests_load_the_rules_file_of_the_chart() -> None:
    rule_files = yaml.safe_load(ALERT_TESTS.read_text())["rule_files"]
    assert [(ALERT_TESTS.parent / path).resolve() for path in rule_files] == [RULES]


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    tests["rule_files"] = [str(RULES)]
    firing = next(
        case
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["alertname"] == "CarstreamStageFailed" and case["exp_alerts"]
    )
    firing["exp_alerts"][0]["exp_labels"]["stage"] = "another"
    broken = tmp_path / "alerts_test.yaml"
    broken.write_text(yaml.safe_dump(tests))
    result = run("promtool", "test", "rules", broken, check=False)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases = alert_cases()
    firing = {name for name, expected in cases if expected}
    silent = {name for name, expected in cases if not expected}
    assert set(alerts()) == firing, "alerts without a case where they fire, or unknown ones"
    assert set(alerts()) == silent, "alerts without a case where they stay silent"


def test_firing_cases_expect_the_labels_and_annotations_of_their_rule() -> None:
    defined = alerts()
    for name, expected in alert_cases():
        for alert in expected:
            assert alert["exp_labels"]["severity"] == defined[name]["labels"]["severity"]
            assert set(alert["exp_annotations"]) == set(defined[name]["annotations"]), name


def test_every_alert_has_a_severity_summary_description_and_runbook() -> None:
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert set(rule["annotations"]) == ANNOTATIONS, name
        assert "{{ $labels." in rule["annotations"]["summary"], name


def test_the_header_lists_the_threshold_of_every_alert() -> None:
    header = RULES.read_text().split("\ngroups:", 1)[0]
    listed = set(re.findall(r"^#\s+((?:Carstream|Kafka)\w+)\s", header, re.MULTILINE))
    assert listed == set(alerts())
