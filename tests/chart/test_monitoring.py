"""The chart's monitoring objects (monitoring.*): PodMonitors, the PrometheusRule, the Grafana
dashboard's ConfigMap and the JMX exporter of the Strimzi Kafka cluster."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from carstream import toolchain
from carstream_operator import builders
from carstream_operator.model import StageSpec
from carstream_operator.settings import Settings
from tests.chart import helm, schemas
from tests.chart.helm import CHART, STANDALONE_VALUES, by_kind, one, render
from tests.monitoring.dashboard import metric_names, queries

RULES_FILE = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD_FILE = CHART / "files" / "dashboard.json"
ALL_ON = (
    "monitoring.podMonitors.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.dashboard.enabled=true",
    "monitoring.labels.release=kube-prometheus-stack",
)
MONITORING_KINDS = {"PodMonitor", "PrometheusRule"}
# prometheus-operator's CRDs (build/bootstrap crds); PodMonitor and PrometheusRule are
# monitoring.coreos.com/v1.
PROMETHEUS_OPERATOR_CRDS = (
    "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
)


def monitored(set_values: Sequence[str] = (), values_files: Sequence[Path] = ()) -> list[Any]:
    return render(values_files, [*ALL_ON, *set_values])


def named(objects: list[Any], kind: str, name: str) -> Mapping[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


@cache
def monitoring_schemas() -> Mapping[tuple[str, str], Mapping[str, Any]]:
    """(apiVersion, kind) -> the strict JSON Schema of PodMonitor and PrometheusRule."""
    found: dict[tuple[str, str], Mapping[str, Any]] = {}
    for name in PROMETHEUS_OPERATOR_CRDS:
        crd = yaml.safe_load(
            (toolchain.upstream_crds_dir() / "prometheus-operator" / name).read_text()
        )
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                found[(f"{group}/{version['name']}", kind)] = schemas._structural_to_json_schema(
                    version["schema"]["openAPIV3Schema"]
                )
    return found


def schema_errors(objects: list[Any]) -> list[str]:
    """Every object against its schema: PodMonitor and PrometheusRule against
    prometheus-operator's CRDs, the others as test_schemas checks them."""
    errors = []
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if obj["kind"] in MONITORING_KINDS:
            validator = jsonschema.Draft7Validator(monitoring_schemas()[key])
            errors += [
                f"{obj['kind']}/{obj['metadata']['name']}: "
                f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
                for error in validator.iter_errors(obj)
            ]
        else:
            errors += schemas.errors(obj)
    return errors


# --- off by default ----------------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(helm.VALUES_FILES))
def test_the_profiles_render_no_monitoring_object(profile: str) -> None:
    objects = render(helm.VALUES_FILES[profile])
    assert not {o["kind"] for o in objects} & MONITORING_KINDS
    names = {o["metadata"]["name"] for o in by_kind(objects, "ConfigMap")}
    assert not {"carstream-dashboard", "carstream-kafka-metrics"} & names
    for kafka in by_kind(objects, "Kafka"):
        assert "metricsConfig" not in kafka["spec"]["kafka"]


# --- PodMonitors -------------------------------------------------------------------------------


def test_pod_monitors_of_the_drivers_the_operator_and_kafka_carry_the_extra_labels() -> None:
    monitors = by_kind(monitored(), "PodMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == [
        "carstream-kafka",
        "carstream-operator",
        "carstream-stages",
    ]
    for monitor in monitors:
        assert monitor["metadata"]["namespace"] == helm.NAMESPACE
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["metadata"]["labels"]["app.kubernetes.io/instance"] == helm.RELEASE
        assert "namespaceSelector" not in monitor["spec"], "the release's namespace only"
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["interval"] == "30s"


def test_the_stages_pod_monitor_selects_the_drivers_the_operator_builds() -> None:
    objects = monitored()
    monitor = named(objects, "PodMonitor", "carstream-stages")
    selector = monitor["spec"]["selector"]
    assert selector == {
        "matchLabels": {
            "spark-role": "driver",
            "app.kubernetes.io/managed-by": "carstream-operator",
            "carstream.io/pipeline": "carstream",
        }
    }
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    pipeline = one(objects, "Pipeline")
    specs = builders.stage_specs(pipeline["metadata"]["name"], pipeline["spec"])
    for stage in specs.values():
        application = builders.application_spec(StageSpec.from_dict(stage), Settings())
        # Spark labels the pods it creates with their role.
        driver = {**application["driver"]["labels"], "spark-role": "driver"}
        executor = {**application["executor"]["labels"], "spark-role": "executor"}
        assert selector["matchLabels"].items() <= driver.items()
        assert not selector["matchLabels"].items() <= executor.items()


def test_without_the_charts_pipeline_the_drivers_of_every_pipeline_are_scraped() -> None:
    monitor = named(monitored(["pipeline.create=false"]), "PodMonitor", "carstream-stages")
    assert monitor["spec"]["selector"] == {
        "matchLabels": {
            "spark-role": "driver",
            "app.kubernetes.io/managed-by": "carstream-operator",
        },
        "matchExpressions": [{"key": "carstream.io/pipeline", "operator": "Exists"}],
    }


def test_the_operators_pod_monitor_selects_its_pod_and_metrics_port() -> None:
    objects = monitored()
    monitor = named(objects, "PodMonitor", "carstream-operator")
    deployment = named(objects, "Deployment", "carstream-operator")
    template = deployment["spec"]["template"]
    assert (
        monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    )
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        template["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"]: p for c in template["spec"]["containers"] for p in c.get("ports", [])}
    assert ports[endpoint["port"]]["containerPort"] == 9090
    # The operator's metrics have their own `namespace` label (the Pipeline's).
    assert endpoint["honorLabels"] is True
    # Its NetworkPolicy lets Prometheus in on that port.
    policy = named(objects, "NetworkPolicy", "carstream-operator")
    assert {"port": "metrics", "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]


def test_kafkas_pod_monitor_selects_the_strimzi_pods_and_their_exporter_port() -> None:
    monitor = named(monitored(), "PodMonitor", "carstream-kafka")
    assert monitor["spec"]["selector"] == {
        "matchLabels": {"strimzi.io/cluster": "carstream", "strimzi.io/kind": "Kafka"}
    }
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "tcp-prometheus"


def test_standalone_kafka_gets_no_kafka_pod_monitor_nor_exporter() -> None:
    objects = monitored(values_files=[STANDALONE_VALUES])
    names = {m["metadata"]["name"] for m in by_kind(objects, "PodMonitor")}
    assert names == {"carstream-stages", "carstream-operator"}
    configs = {o["metadata"]["name"] for o in by_kind(objects, "ConfigMap")}
    assert "carstream-kafka-metrics" not in configs


# --- Kafka's JMX exporter ----------------------------------------------------------------------


def exporter_config(objects: list[Any]) -> Mapping[str, Any]:
    kafka = one(objects, "Kafka")
    metrics = kafka["spec"]["kafka"]["metricsConfig"]
    assert metrics["type"] == "jmxPrometheusExporter"
    reference = metrics["valueFrom"]["configMapKeyRef"]
    config_map = named(objects, "ConfigMap", reference["name"])
    return yaml.safe_load(config_map["data"][reference["key"]])


def test_the_kafka_cluster_exports_the_metrics_that_alerts_and_dashboard_use() -> None:
    config = exporter_config(monitored())
    assert config["lowercaseOutputName"] is True
    exported = {rule["name"] for rule in config["rules"]}
    assert {
        "kafka_server_replicamanager_underreplicatedpartitions",
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        "kafka_server_brokertopicmetrics_messagesin_total",
    } <= exported
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    expressions = [rule["expr"] for group in groups for rule in group["rules"]]
    expressions += [expr for _, expr in queries(json.loads(DASHBOARD_FILE.read_text()))]
    used = set().union(*(metric_names(expr) for expr in expressions))
    kafka_metrics = {name for name in used if name.startswith("kafka_")}
    assert kafka_metrics and kafka_metrics <= exported
    for rule in config["rules"]:
        assert rule["pattern"].startswith(("kafka.server<", "kafka.controller<")), rule
        assert rule["type"] in {"GAUGE", "COUNTER"}
        assert rule["name"].endswith("_total") == (rule["type"] == "COUNTER"), rule


# --- PrometheusRule ----------------------------------------------------------------------------


def test_the_prometheus_rule_holds_the_rules_file_with_its_templates_untouched() -> None:
    rule = one(monitored(), "PrometheusRule")
    assert rule["metadata"]["name"] == "carstream"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"]
    text = yaml.safe_dump(rule)
    assert "{{ $labels.stage }}" in text.replace("\n", " ").replace("  ", " ")
    summary = rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]
    assert summary == "Stage {{ $labels.stage }} of pipeline {{ $labels.pipeline }} failed"


# --- the dashboard -----------------------------------------------------------------------------


def test_the_dashboard_config_map_carries_the_sidecar_label_and_the_dashboard() -> None:
    objects = monitored()
    config_map = named(objects, "ConfigMap", "carstream-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "annotations" not in config_map["metadata"]
    (name,) = config_map["data"]
    assert name.endswith(".json")
    assert json.loads(config_map["data"][name]) == json.loads(DASHBOARD_FILE.read_text())


def test_the_dashboards_label_and_annotations_are_configurable() -> None:
    objects = render(
        set_values=[
            "monitoring.dashboard.enabled=true",
            "monitoring.dashboard.label=grafana.com/dashboard",
            "monitoring.dashboard.labelValue=carstream",
            "monitoring.dashboard.annotations.grafana_folder=Pipelines",
        ]
    )
    config_map = named(objects, "ConfigMap", "carstream-dashboard")
    assert config_map["metadata"]["labels"]["grafana.com/dashboard"] == "carstream"
    assert "grafana_dashboard" not in config_map["metadata"]["labels"]
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Pipelines"}
    assert not {o["kind"] for o in objects} & MONITORING_KINDS, "only the dashboard is on"


# --- schemas and values ------------------------------------------------------------------------


def test_helm_lint_is_clean_with_monitoring_on() -> None:
    result = helm.helm("lint", "--strict", CHART, *helm.value_args(set_values=ALL_ON))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("values_files", [(), (STANDALONE_VALUES,)], ids=["strimzi", "standalone"])
def test_every_object_matches_its_schema_with_monitoring_on(values_files: tuple[Path]) -> None:
    objects = monitored(values_files=values_files)
    assert {o["kind"] for o in objects} >= MONITORING_KINDS
    assert schema_errors(objects) == []


def test_the_monitoring_schemas_catch_a_wrong_field() -> None:
    monitor = named(monitored(), "PodMonitor", "carstream-stages")
    monitor["spec"]["podMetricsEndpoints"][0]["portName"] = "metrics"
    assert any("portName" in error for error in schema_errors([monitor]))
    rule = one(monitored(), "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "soon"
    assert schema_errors([rule]) != []


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("monitoring.podMonitors.enabled=yes", "at '/monitoring/podMonitors/enabled'"),
        ("monitoring.podMonitors.interval=often", "at '/monitoring/podMonitors/interval'"),
        ("monitoring.dashboard.label=not a label", "at '/monitoring/dashboard/label'"),
        ("monitoring.serviceMonitors.enabled=true", "serviceMonitors"),
    ],
)
def test_the_values_schema_rejects_bad_monitoring_values(assignment: str, message: str) -> None:
    result = helm.helm("template", "carstream", CHART, "--set", assignment, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_lineage_values_become_the_pipelines_openlineage_spark_conf() -> None:
    assert not any(
        key.startswith("spark.openlineage")
        for key in one(render(), "Pipeline")["spec"].get("sparkConf", {})
    )
    conf = one(
        render(
            set_values=[
                "monitoring.lineage.transport=http",
                "monitoring.lineage.url=http://marquez:5000",
            ]
        ),
        "Pipeline",
    )["spec"]["sparkConf"]
    assert conf["spark.extraListeners"] == "io.openlineage.spark.agent.OpenLineageSparkListener"
    assert conf["spark.openlineage.transport.type"] == "http"
    assert conf["spark.openlineage.transport.url"] == "http://marquez:5000"
    assert conf["spark.openlineage.namespace"] == "carstream"
    with pytest.raises(helm.ToolFailed, match=r"monitoring\.lineage\.url is required"):
        render(set_values=["monitoring.lineage.transport=http"])
