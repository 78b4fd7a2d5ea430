"""The spark-operator controller image (build/images/spark-operator/Dockerfile), statically.

No container engine runs here, so the image is not built. What is checked: the Dockerfile as
BuildKit's parser reads it, the shell syntax of its RUN, that it copies only the binary the
bootstrap builds, that its base and version agree with the chart values and the pinned module,
and that its entry point is what spark-operator's chart expects (the chart sets `args` only).
"""

from __future__ import annotations

import subprocess
from typing import Any

import dockerfile
import pytest
import yaml

from carstream import toolchain
from tests.chart import helm
from tests.chart.helm import CHART, STACK_CHART

DOCKERFILE = toolchain.REPO_ROOT / "build" / "images" / "spark-operator" / "Dockerfile"
COMMANDS = dockerfile.parse_file(str(DOCKERFILE))


def instructions(name: str) -> list[dockerfile.Command]:
    return [command for command in COMMANDS if command.cmd == name]


def arg_default(name: str) -> str:
    for command in instructions("ARG"):
        key, _, value = command.value[0].partition("=")
        if key == name:
            return value
    raise AssertionError(f"no ARG {name}")


@pytest.fixture(scope="module")
def controller_chart(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """spark-operator's chart rendered alone, with its defaults and the webhook on."""
    return helm.documents(
        helm.helm(
            "template", "spark-operator", toolchain.spark_operator_chart_dir(), "-n", "carstream"
        ).stdout
    )


def test_it_builds_on_the_carstream_image_of_the_chart() -> None:
    (base,) = instructions("FROM")
    assert base.value == ("${CARSTREAM_IMAGE}",)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values-local.yaml").read_text())
    assert values["image"]["tag"] == chart["appVersion"]
    assert (
        arg_default("CARSTREAM_IMAGE") == f"{values['image']['repository']}:{chart['appVersion']}"
    )


def test_it_adds_only_the_binary_the_bootstrap_builds_at_the_pinned_version() -> None:
    copies = instructions("COPY")
    assert [command.value for command in copies] == [("spark-operator", "/usr/bin/spark-operator")]
    assert arg_default("SPARK_OPERATOR_VERSION") == f"v{toolchain.spark_operator_version()}"
    for run in instructions("RUN"):
        script = " ".join(run.value)
        checked = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
        assert checked.returncode == 0, checked.stderr
    (run,) = instructions("RUN")
    assert 'grep -qx "Git Version: ${SPARK_OPERATOR_VERSION}"' in run.value[0]


def test_it_runs_as_the_non_root_spark_user_that_the_chart_expects(
    controller_chart: list[dict[str, Any]],
) -> None:
    assert [command.value[0] for command in instructions("USER")] == ["root", "185:185"]
    last_user = max(i for i, c in enumerate(COMMANDS) if c.cmd == "USER")
    assert all(c.cmd not in ("RUN", "COPY") for c in COMMANDS[last_user:])
    for deployment in helm.by_kind(controller_chart, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["fsGroup"] == 185
        (container,) = pod["containers"]
        assert container["securityContext"]["runAsNonRoot"] is True


def test_the_entry_point_takes_the_charts_args(controller_chart: list[dict[str, Any]]) -> None:
    (entrypoint,) = instructions("ENTRYPOINT")
    assert entrypoint.value == ("/usr/bin/tini", "-s", "--", "/usr/bin/spark-operator")
    (cmd,) = instructions("CMD")
    assert cmd.value == ("controller", "start")
    commands = {}
    for deployment in helm.by_kind(controller_chart, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert "command" not in container, "the chart relies on the image's entry point"
        commands[container["name"]] = container["args"][:2]
    assert commands == {
        "spark-operator-controller": ["controller", "start"],
        "spark-operator-webhook": ["webhook", "start"],
    }


def test_the_local_values_name_the_image_the_dockerfile_makes() -> None:
    values = yaml.safe_load((STACK_CHART / "values-local.yaml").read_text())["spark-operator"]
    image = values["image"]
    reference = f"{image['registry']}/{image['repository']}:{image['tag']}"
    assert reference == "docker.io/library/carstream-spark-operator:2.5.2"
    assert image["pullPolicy"] == "Never"
    assert f"docker build -t carstream-spark-operator:{image['tag']}" in DOCKERFILE.read_text()
    assert image["tag"] == toolchain.spark_operator_version()

    # The documented build context holds the binary only (the image copies nothing else).
    assert '/bin/spark-operator" "$context/"' in DOCKERFILE.read_text()
