"""The Grafana dashboard (charts/carstream/files/dashboard.json): its queries, the metrics they
use, and promtool's parser on each of them; and the helpers of tests/monitoring/dashboard.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from carstream import toolchain
from carstream_operator import metrics as operator_metrics
from tests.chart.helm import run
from tests.monitoring.dashboard import (
    DEFAULT_VARIABLES,
    metric_names,
    panels,
    queries,
    substitute,
    variables_used,
)

FILES = toolchain.REPO_ROOT / "charts" / "carstream" / "files"
DASHBOARD = FILES / "dashboard.json"
RULES = FILES / "prometheus-rules.yaml"
OBSERVABILITY = toolchain.REPO_ROOT / "docs" / "observability.md"
SERIES_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",)}
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def documented_metrics() -> set[str]:
    """The series names of the table of docs/observability.md (histograms: _bucket, _sum,
    _count; counters are listed with their _total)."""
    names = set()
    for line in OBSERVABILITY.read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) < 4 or not re.fullmatch(r"`carstream_\w+`", cells[1]):
            continue
        name, kind = cells[1].strip("`"), cells[2]
        if kind == "histogram":
            names.update(name + suffix for suffix in SERIES_SUFFIXES["histogram"])
        else:
            names.add(name)
    return names


def operator_series() -> set[str]:
    """The series names of the operator's metrics (operator/carstream_operator/metrics.py)."""
    names = set()
    for collector in vars(operator_metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for metric in collector.describe():
                suffixes = SERIES_SUFFIXES.get(metric.type, ("",))
                names.update(metric.name + suffix for suffix in suffixes)
    return names


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for group in groups
        for rule in group["rules"]
    ]


def variable_queries() -> list[tuple[str, str]]:
    """(variable, PromQL) of each query variable: label_values(SELECTOR, LABEL) as the
    selector Grafana sends."""
    found = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = LABEL_VALUES.match(variable["definition"])
        assert match, f"${variable['name']}: not label_values(selector, label)"
        assert variable["query"]["query"] == variable["definition"]
        found.append((variable["name"], f"count by ({match['label']}) ({match['selector']})"))
    return found


# --- the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable() -> None:
    model = dashboard()
    assert model["schemaVersion"] >= 39
    assert model["uid"] == "carstream-pipeline"
    variables = {variable["name"]: variable for variable in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["pipeline"]["definition"] == (
        'label_values(carstream_query_batches_total{namespace=~"$namespace"}, pipeline)'
    )
    assert {"namespace", "pipeline", "stage"} <= set(variables)


def test_every_panel_queries_prometheus() -> None:
    model = dashboard()
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(model):
        exprs = [target.get("expr") for target in panel.get("targets") or []]
        assert exprs and all(exprs), f"{panel['title']}: a target without expr"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    assert len(queries(model)) >= 20


def test_the_dashboard_covers_every_documented_metric() -> None:
    used = set().union(*(metric_names(expr) for _, expr in queries(dashboard())))
    documented = documented_metrics()
    # Of a histogram, the buckets are enough.
    documented -= {
        name
        for name in documented
        if name.endswith(("_sum", "_count")) and re.sub(r"_(sum|count)$", "_bucket", name) in used
    }
    assert documented - used == set()


def test_queries_use_only_the_documented_variables_with_rate_interval_in_rates() -> None:
    model = dashboard()
    described = model["description"]
    for title, expr in queries(model) + variable_queries():
        names = variables_used(expr)
        assert names <= set(DEFAULT_VARIABLES), f"{title}: {names - set(DEFAULT_VARIABLES)}"
        for name in names:
            assert f"${name}" in described, f"the dashboard's description omits ${name}"
        for window in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]*)\]", expr):
            assert window == "$__rate_interval", f"{title}: {expr}"
    templated = {v["name"] for v in model["templating"]["list"]} - {"datasource"}
    used = set().union(*(variables_used(expr) for _, expr in queries(model)))
    assert templated <= used, "every variable filters something"


@pytest.mark.parametrize(
    "source", ["dashboard", "rules"], ids=["dashboard.json", "prometheus-rules.yaml"]
)
def test_every_metric_is_documented_or_the_operators_or_kafkas(source: str) -> None:
    expressions = queries(dashboard()) if source == "dashboard" else rule_expressions()
    known = documented_metrics() | operator_series()
    for title, expr in expressions:
        for name in metric_names(expr):
            assert name in known or name.startswith("kafka_"), f"{title}: {name}"


def test_promtool_parses_every_query_of_the_dashboard(tmp_path: Path) -> None:
    """Each query, its variables substituted, as a recording rule: `promtool check rules`
    parses them all."""
    expressions = queries(dashboard()) + variable_queries()
    rules = [
        {
            "record": f"dashboard:query_{index}:{re.sub(r'[^a-z0-9]+', '_', title.lower())}",
            "expr": substitute(expr, DEFAULT_VARIABLES),
        }
        for index, (title, expr) in enumerate(expressions)
    ]
    rules_file = tmp_path / "dashboard-queries.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run("promtool", "check", "rules", rules_file, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    rules_file = tmp_path / "broken.yaml"
    rules_file.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "g", "rules": [{"record": "r", "expr": "sum by (stage (x)"}]}]}
        )
    )
    result = run("promtool", "check", "rules", rules_file, check=False)
    assert result.returncode != 0


# --- the helpers -----------------------------------------------------------------------------


def test_substitute_replaces_every_form_of_a_variable() -> None:
    variables = {"pipeline": "carstream", "stage": ".*", "__rate_interval": "1m"}
    expr = (
        'rate(x{pipeline="$pipeline", a="${pipeline}", b="[[pipeline]]", stage=~"$stage"}'
        "[$__rate_interval])"
    )
    assert substitute(expr, variables) == (
        'rate(x{pipeline="carstream", a="carstream", b="carstream", stage=~".*"}[1m])'
    )
    assert substitute('x{stage=~"${stage:regex}"}', {"stage": ".*"}) == 'x{stage=~".*"}'


def test_substitute_formats_several_values_as_an_escaped_regex() -> None:
    assert substitute('x{stage=~"$stage"}', {"stage": ["enrich", "count"]}) == (
        'x{stage=~"(enrich|count)"}'
    )
    assert substitute('x{n=~"$n"}', {"n": ["a.b", "c"]}) == r'x{n=~"(a\\.b|c)"}'
    assert substitute('x{n=~"$n"}', {"n": ["a.b"]}) == r'x{n=~"a\\.b"}'


def test_substitute_refuses_a_variable_without_a_value() -> None:
    with pytest.raises(KeyError, match="stage"):
        substitute('x{stage=~"$stage"}', {"pipeline": "carstream"})
    assert variables_used('x{a="$a", b="${b}"}[$__rate_interval]') == {"a", "b", "__rate_interval"}


def test_queries_lists_the_targets_of_panels_and_of_panels_in_rows() -> None:
    model = {
        "panels": [
            {"type": "row", "title": "r", "panels": [{"title": "in", "targets": [{"expr": "b"}]}]},
            {"type": "timeseries", "title": "top", "targets": [{"expr": "a"}, {"refId": "B"}]},
        ]
    }
    assert queries(model) == [("in", "b"), ("top", "a")]


def test_metric_names_leaves_out_functions_labels_keywords_and_durations() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (stage, le) (rate(a_bucket{stage=~"x|y"}[5m])))'
        " / on (stage) group_left b_total offset 1h > bool 1e3"
        ' and time() - c unless d{name="e"}'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d"}
    assert documented_metrics() >= {
        "carstream_query_batches_total",
        "carstream_query_batch_duration_seconds_bucket",
        "carstream_generator_delivery_errors_total",
    }
    assert "carstream_operator_stage_restarts_total" in operator_series()
    assert "carstream_operator_stage_phase" in operator_series()
