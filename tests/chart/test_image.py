"""The Dockerfile, its build context, and the scripts and kind config around the image.

No container engine runs here, so the image is never built in these tests. What is checked:
the Dockerfile as BuildKit's own parser reads it (the `dockerfile` package wraps it), the shell
syntax of every RUN, that every file it copies is in the build context, that the versions it
depends on agree with the pins, and that the SparkApplication entry point it writes runs the
carstream CLI.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest
import yaml

from carstream import toolchain
from tests.chart.helm import CHART

REPO = toolchain.REPO_ROOT
COMMANDS = dockerfile.parse_file(str(REPO / "Dockerfile"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def stages() -> list[list[dockerfile.Command]]:
    result: list[list[dockerfile.Command]] = []
    for command in COMMANDS:
        if command.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(command)
    return result


def pinned(package: str) -> str:
    for requirement in PYPROJECT["project"]["dependencies"]:
        name, _, version = requirement.partition("==")
        if name == package:
            return version
    raise AssertionError(f"{package} is not pinned in pyproject.toml")


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern of .dockerignore decides; `!` re-includes."""
    excluded = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, pattern.replace("**/", "*")) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_the_final_image_runs_as_a_non_root_user_through_sparks_entrypoint() -> None:
    final = stages()[-1]
    users = [command.value[0] for command in final if command.cmd == "USER"]
    assert users == ["185:185"]
    (entrypoint,) = [command for command in final if command.cmd == "ENTRYPOINT"]
    assert entrypoint.value == ("/opt/entrypoint.sh",)
    env = dict(
        zip(
            *[iter(value for command in final if command.cmd == "ENV" for value in command.value)]
            * 2,
            strict=True,
        )
    )
    assert env["SPARK_HOME"] == "/opt/venv/lib/python3.11/site-packages/pyspark"
    assert env["PYSPARK_PYTHON"] == "/opt/venv/bin/python"


def test_base_images_and_versions_agree_with_the_pins() -> None:
    arguments = dict(
        command.value[0].split("=", 1)
        for command in COMMANDS
        if command.cmd == "ARG" and "=" in command.value[0]
    )
    spark_version = pinned("pyspark")
    assert arguments["SPARK_IMAGE"] == f"apache/spark:{spark_version}-python3"
    python = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert arguments["PYTHON_IMAGE"].startswith(f"python:{python}-")
    pom = (REPO / "build" / "pom.xml").read_text()
    assert f"<spark.version>{spark_version}</spark.version>" in pom
    for profile in re.findall(r"-P ([\w-]+)", " ".join(c.original for c in COMMANDS)):
        assert f"<id>{profile}</id>" in pom, f"build/pom.xml has no profile {profile}"


def test_every_file_copied_from_the_build_context_is_in_it() -> None:
    copied = [
        source
        for command in COMMANDS
        if command.cmd == "COPY" and not any(f.startswith("--from") for f in command.flags)
        for source in command.value[:-1]
    ]
    assert copied == [
        "build/pom.xml",
        "pyproject.toml",
        "README.md",
        "jobs",
        "operator",
        "jobs/carstream/__main__.py",
    ]
    for source in copied:
        assert (REPO / source).exists(), source
        assert not dockerignored(source), f"{source} is excluded by .dockerignore"
    wheel = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    for package in wheel:
        assert any(package == c or package.startswith(c + "/") for c in copied), package
        assert not dockerignored(f"{package}/__init__.py")
    assert dockerignored("tests/chart/test_image.py")
    assert dockerignored(".venv/bin/python")
    assert dockerignored("jobs/carstream/__pycache__/cli.cpython-311.pyc")


def test_every_run_instruction_is_valid_shell() -> None:
    runs = [command.value[0] for command in COMMANDS if command.cmd == "RUN"]
    assert runs
    for script in runs:
        result = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}\n{result.stderr}"


def test_the_spark_entry_point_runs_the_carstream_cli(tmp_path: Path) -> None:
    (main_file,) = [
        command.value[0]
        for command in COMMANDS
        if command.cmd == "COPY" and command.value[-1] == "/opt/carstream/main.py"
    ]
    main = tmp_path / "main.py"  # where the image puts it: away from the package's own folder
    shutil.copyfile(REPO / main_file, main)
    help_text = subprocess.run(
        [sys.executable, str(main), "--help"], capture_output=True, text=True, check=False
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "usage: carstream" in help_text.stdout
    stage = subprocess.run(
        [sys.executable, str(main), "stage", "nonsense"], capture_output=True, text=True
    )
    assert stage.returncode == 2
    assert "usage: carstream stage" in stage.stderr
    assert "Traceback" not in stage.stderr


KIND_CONFIG = yaml.safe_load((REPO / "kind-config.yaml").read_text())
KIND_VALUES = yaml.safe_load((CHART / "values-kind.yaml").read_text())


def test_kind_config_has_a_control_plane_and_labelled_workers_for_drivers_and_executors() -> None:
    assert KIND_CONFIG["kind"] == "Cluster"
    assert KIND_CONFIG["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [node["role"] for node in KIND_CONFIG["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    worker_labels = [node.get("labels", {}) for node in KIND_CONFIG["nodes"][1:]]
    assert worker_labels == [
        KIND_VALUES["spark"]["driverNodeSelector"],
        KIND_VALUES["spark"]["executorNodeSelector"],
    ]


def test_kind_maps_the_kafka_node_ports_of_values_kind_to_the_host() -> None:
    external = KIND_VALUES["kafka"]["externalListener"]
    ports = {
        mapping["containerPort"]: mapping
        for node in KIND_CONFIG["nodes"]
        for mapping in node.get("extraPortMappings", [])
    }
    for port in [external["bootstrapNodePort"], *external["brokerNodePorts"]]:
        assert ports[port]["hostPort"] == port
        assert ports[port]["listenAddress"] == "127.0.0.1"
    assert external["advertisedHost"] == "localhost"


def test_kind_workers_share_the_folder_of_the_shared_volume() -> None:
    volume = KIND_VALUES["storage"]["sharedVolume"]
    for node in KIND_CONFIG["nodes"][1:]:
        (mount,) = node["extraMounts"]
        assert mount["containerPath"] == volume["hostPath"]
        assert mount["hostPath"] == "/tmp/carstream-kind"
    kind_up = (REPO / "scripts" / "kind-up").read_text()
    assert 'shared_dir="/tmp/carstream-kind"' in kind_up


@pytest.fixture
def fake_tools(tmp_path: Path) -> tuple[Path, Path]:
    """docker and kind stand-ins that record their arguments: no container engine here."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for tool in ("docker", "kind"):
        script = bin_dir / tool
        script.write_text(
            f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n'
            + ('[ "$1 $2" = "get clusters" ] && echo other\n' if tool == "kind" else "")
            + "exit 0\n"
        )
        script.chmod(0o755)
    return bin_dir, calls


def test_kind_up_creates_the_cluster_builds_and_loads_the_image(
    fake_tools: tuple[Path, Path],
) -> None:
    bin_dir, calls = fake_tools
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("KIND_CLUSTER", None)
    env.pop("IMAGE", None)
    result = subprocess.run(
        [str(REPO / "scripts" / "kind-up")], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    version = PYPROJECT["project"]["version"]
    assert calls.read_text().splitlines() == [
        "kind get clusters",
        "kind create cluster --name carstream --config kind-config.yaml",
        f"docker build --tag carstream:{version} .",
        f"kind load docker-image carstream:{version} --name carstream",
    ]
    assert KIND_VALUES["image"] == {
        "repository": "carstream",
        "tag": version,
        "pullPolicy": "Never",
    }
    assert Path("/tmp/carstream-kind").stat().st_mode & 0o1777 == 0o1777


def test_kind_up_says_what_is_missing(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (bare / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(bare)}
    result = subprocess.run(
        [str(REPO / "scripts" / "kind-up")], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 2
    assert "kind-up: 'docker' is not on PATH" in result.stderr
