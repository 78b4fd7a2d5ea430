"""The Dockerfile, its build context, its entry point and download helper, and the scripts
and kind config around the image.

The image itself is built and run on a real cluster by tests/e2e (`make e2e`, root only);
these tests check what can be checked without a container engine: the Dockerfile as
BuildKit's own parser reads it (the `dockerfile` package wraps it), the shell syntax of every
RUN, that every file it copies is in the build context, that the versions it depends on agree
with the pins, that only the download stages see the extra CA, and what the entry point and
with-extra-ca do, run here with stand-ins for tini, java and the secret.
"""

from __future__ import annotations

import fnmatch
import os
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


def final_env() -> dict[str, str]:
    final = stages()[-1]
    values = [value for command in final if command.cmd == "ENV" for value in command.value]
    return dict(zip(values[::2], values[1::2], strict=True))


def test_the_final_image_runs_as_a_non_root_user_through_its_own_entrypoint() -> None:
    final = stages()[-1]
    users = [command.value[0] for command in final if command.cmd == "USER"]
    assert users == ["185:185"]
    (entrypoint,) = [command for command in final if command.cmd == "ENTRYPOINT"]
    assert entrypoint.value == ("/opt/entrypoint.sh",)
    copies = {c.value[-1]: c.value[0] for c in final if c.cmd == "COPY" and not c.flags}
    assert copies["/opt/entrypoint.sh"] == "build/image/entrypoint.sh"
    env = final_env()
    assert env["SPARK_HOME"] == "/opt/venv/lib/python3.11/site-packages/pyspark"
    assert env["PYSPARK_PYTHON"] == "/opt/venv/bin/python"


def test_debian_bookworm_slim_is_the_only_base_and_versions_agree_with_the_pins() -> None:
    bases = [command.value[0] for command in COMMANDS if command.cmd == "FROM"]
    names = [c.value[2] for c in COMMANDS if c.cmd == "FROM" and len(c.value) == 3]
    assert bases[0] == "debian:bookworm-slim"
    assert all(base == "debian:bookworm-slim" or base in names for base in bases), bases
    assert not any(c.original.startswith("# syntax") for c in COMMANDS)
    assert not (REPO / "Dockerfile").read_text().startswith("# syntax")
    # bookworm's python3 is 3.11: the version SPARK_HOME names and pyproject requires
    python = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert python == "3.11"
    assert f"/python{python}/" in final_env()["SPARK_HOME"]
    pom = (REPO / "build" / "pom.xml").read_text()
    assert f"<spark.version>{pinned('pyspark')}</spark.version>" in pom
    defaults = {
        c.value[0].split("=", 1)[1].strip('"')
        for c in COMMANDS
        if c.cmd == "ARG" and c.value[0].startswith("JAR_GROUPS=")
    }
    assert defaults == {"spark-kafka spark-s3 openlineage"}
    for profile in defaults.pop().split():
        assert f"<id>{profile}</id>" in pom, f"build/pom.xml has no profile {profile}"


def test_only_the_download_stages_see_the_extra_ca() -> None:
    """The extra-ca secret is mounted by the RUN steps that run pip or mvn, always through
    with-extra-ca, and never in the final stage; the final image copies no helper."""
    *build_stages, final = stages()
    for stage in build_stages:
        for command in stage:
            if command.cmd == "RUN" and (
                "pip install" in command.value[0] or "mvn" in command.value[0]
            ):
                assert "--mount=type=secret,id=extra-ca" in command.flags, command.original
                assert "with-extra-ca" in command.value[0], command.original
    assert not any("secret" in flag for command in final for flag in command.flags)
    assert not any("with-extra-ca" in " ".join(command.value) for command in final)


def test_every_file_copied_from_the_build_context_is_in_it() -> None:
    copied = [
        source
        for command in COMMANDS
        if command.cmd == "COPY" and not any(f.startswith("--from") for f in command.flags)
        for source in command.value[:-1]
    ]
    assert copied == [
        "build/image/with-extra-ca",
        "build/pom.xml",
        "build/image/with-extra-ca",
        "pyproject.toml",
        "README.md",
        "jobs",
        "operator",
        "build/image/entrypoint.sh",
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
    assert dockerignored("localcluster/cli.py")
    assert dockerignored(".venv/bin/python")
    assert dockerignored("jobs/carstream/__pycache__/cli.cpython-311.pyc")


def test_every_run_instruction_is_valid_shell() -> None:
    runs = [command.value[0] for command in COMMANDS if command.cmd == "RUN"]
    assert runs
    for script in runs:
        result = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}\n{result.stderr}"
    for script in ("build/image/entrypoint.sh", "build/image/with-extra-ca"):
        shell = "bash" if script.endswith(".sh") else "sh"
        result = subprocess.run([shell, "-n", str(REPO / script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


@pytest.fixture
def recording_tools(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """tini and java stand-ins that print their arguments one per line, as the image's
    entry point calls them (tini -s -- COMMAND...)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("tini", "java"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\nfor a in "$@"; do echo "{tool}: $a"; done\n')
        script.chmod(0o755)
    spark_home = tmp_path / "spark"
    (spark_home / "bin").mkdir(parents=True)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SPARK_HOME": str(spark_home),
        "HOME": str(tmp_path),
    }
    return env, spark_home


def entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "build" / "image" / "entrypoint.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_the_entrypoint_runs_a_driver_as_spark_submit_in_client_mode_bound_to_the_pod(
    recording_tools: tuple[dict[str, str], Path],
) -> None:
    env, spark_home = recording_tools
    result = entrypoint(
        {**env, "SPARK_DRIVER_BIND_ADDRESS": "10.244.1.7"},
        "driver", "--properties-file", "/opt/spark/conf/spark.properties",
        "--class", "org.apache.spark.deploy.PythonRunner", "local:///opt/carstream/main.py",
        "stage", "dims",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "tini: -s",
        "tini: --",
        f"tini: {spark_home}/bin/spark-submit",
        "tini: --conf",
        "tini: spark.driver.bindAddress=10.244.1.7",
        "tini: --conf",
        "tini: spark.executorEnv.SPARK_DRIVER_POD_IP=10.244.1.7",
        "tini: --deploy-mode",
        "tini: client",
        "tini: --properties-file",
        "tini: /opt/spark/conf/spark.properties",
        "tini: --class",
        "tini: org.apache.spark.deploy.PythonRunner",
        "tini: local:///opt/carstream/main.py",
        "tini: stage",
        "tini: dims",
    ]


def test_the_entrypoint_runs_an_executor_jvm_with_the_options_in_index_order(
    recording_tools: tuple[dict[str, str], Path],
) -> None:
    env, spark_home = recording_tools
    executor_env = {
        **env,
        # eleven options: index 10 must come after 2, not after 1
        **{f"SPARK_JAVA_OPT_{i}": f"-Dopt{i}=value {i}" for i in range(11)},
        "SPARK_EXECUTOR_MEMORY": "512m",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@driver-svc:7078",
        "SPARK_EXECUTOR_ID": "1",
        "SPARK_EXECUTOR_CORES": "1",
        "SPARK_APPLICATION_ID": "spark-0123",
        "SPARK_EXECUTOR_POD_IP": "10.244.2.5",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "app-exec-1",
    }
    result = entrypoint(executor_env, "executor")
    assert result.returncode == 0, result.stderr
    lines = [line.removeprefix("tini: ") for line in result.stdout.splitlines()]
    assert lines[:3] == ["-s", "--", "java"]
    assert lines[3:14] == [f"-Dopt{i}=value {i}" for i in range(11)]
    assert lines[14:] == [
        "-Xms512m",
        "-Xmx512m",
        "-cp",
        f"{spark_home}/jars/*",
        "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
        "--driver-url", "spark://CoarseGrainedScheduler@driver-svc:7078",
        "--executor-id", "1",
        "--cores", "1",
        "--app-id", "spark-0123",
        "--hostname", "10.244.2.5",
        "--resourceProfileId", "0",
        "--podName", "app-exec-1",
    ]  # fmt: skip


def test_the_entrypoint_runs_any_other_command_under_tini_and_wants_one(
    recording_tools: tuple[dict[str, str], Path],
) -> None:
    env, _ = recording_tools
    result = entrypoint(env, "carstream", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["tini: -s", "tini: --", "tini: carstream", "tini: --help"]
    empty = entrypoint(env)
    assert empty.returncode == 2
    assert "usage: entrypoint.sh" in empty.stderr


def _self_signed_ca(directory: Path) -> Path:
    key, cert = directory / "ca.key", directory / "ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=carstream test intercepting CA"],
        capture_output=True, check=True,
    )  # fmt: skip
    return cert


def test_with_extra_ca_trusts_the_secret_for_pip_and_java_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    ca = _self_signed_ca(tmp_path)
    report = tmp_path / "report"
    probe = (
        f'{{ echo "$PIP_CERT"; echo "$MAVEN_OPTS"; grep -c "BEGIN CERTIFICATE" "$PIP_CERT";'
        ' store="${MAVEN_OPTS#*trustStore=}"; store="${store%% *}";'
        ' keytool -list -keystore "$store" -storepass changeit | grep -c "^extra-";'
        f" }} > {report}"
    )
    env = {**os.environ, "EXTRA_CA_FILE": str(ca), "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [str(REPO / "build" / "image" / "with-extra-ca"), "sh", "-c", probe],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pip_cert, maven_opts, bundled, imported = report.read_text().splitlines()
    debian = Path("/etc/ssl/certs/ca-certificates.crt").read_text().count("BEGIN CERTIFICATE")
    assert int(bundled) == debian + 1
    assert int(imported) == 1
    assert "-Djavax.net.ssl.trustStore=" in maven_opts
    assert not Path(pip_cert).exists(), "the trust files outlived the command"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.key", "ca.pem", "report"]


def test_with_extra_ca_without_a_secret_runs_the_command_unchanged(tmp_path: Path) -> None:
    env = {**os.environ, "EXTRA_CA_FILE": str(tmp_path / "absent")}
    env.pop("PIP_CERT", None)
    result = subprocess.run(
        [str(REPO / "build" / "image" / "with-extra-ca"), "sh", "-c", 'echo "[${PIP_CERT:-}]"'],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "[]\n")


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
