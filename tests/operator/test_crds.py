"""The generated CRDs: up to date, named as agreed, and their offline checks."""

from __future__ import annotations

import re

import pytest
import yaml

from carstream import toolchain
from carstream.stages import count, detect, enrich
from carstream_operator import crds
from carstream_operator import resources as r

CRDS_DIR = toolchain.carstream_crds_dir()


def test_the_crd_files_are_what_the_generator_writes() -> None:
    assert crds.main(["--check"]) == 0, "run: python -m carstream_operator.crds"


def test_the_kustomization_lists_every_crd_file() -> None:
    kustomization = yaml.safe_load((CRDS_DIR / "kustomization.yaml").read_text())
    files = sorted(p.name for p in CRDS_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files


@pytest.mark.parametrize(
    ("file", "kind", "plural", "short"),
    [
        ("carstream.io_pipelines.yaml", "Pipeline", "pipelines", "cpl"),
        ("carstream.io_pipelinestages.yaml", "PipelineStage", "pipelinestages", "cps"),
    ],
)
def test_names(file: str, kind: str, plural: str, short: str) -> None:
    crd = yaml.safe_load((CRDS_DIR / file).read_text())
    assert crd["metadata"]["name"] == f"{plural}.carstream.io"
    assert crd["spec"]["names"]["kind"] == kind
    assert crd["spec"]["names"]["shortNames"] == [short]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert {"Phase", "Restarts", "Age"} <= set(columns)


def test_every_field_is_documented() -> None:
    undocumented = []

    def walk(node: dict, path: str) -> None:
        for name, child in (node.get("properties") or {}).items():
            if name not in ("apiVersion", "kind", "metadata") and not child.get("description"):
                undocumented.append(f"{path}.{name}")
            walk(child, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    for file in ("carstream.io_pipelines.yaml", "carstream.io_pipelinestages.yaml"):
        crd = yaml.safe_load((CRDS_DIR / file).read_text())
        walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], file)
    assert undocumented == []


@pytest.mark.parametrize(
    "schedule",
    ["*/15 * * * *", "0 3 * * MON-FRI", "30 2 1,15 jan,jul *", "@hourly", "* * * * * */2"],
)
def test_cron_pattern_accepts(schedule: str) -> None:
    assert re.match(crds.CRON, schedule)


@pytest.mark.parametrize(
    "schedule",
    ["every minute", "* * * *", "61 * * * *", "0 24 * * *", "*/0 * * * *", "0 0 32 * *", ""],
)
def test_cron_pattern_rejects(schedule: str) -> None:
    assert not re.match(crds.CRON, schedule)


def test_the_generator_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        crds.main(["--no-such-flag"])
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_the_triggers_the_crds_allow_are_those_the_jobs_run() -> None:
    """The CEL rules come from resources.JOB_TRIGGERS (the operator never imports Spark); the
    stages check their own SUPPORTED_TRIGGERS when they start."""
    supported = {
        module.STAGE: tuple(module.SUPPORTED_TRIGGERS) for module in (enrich, detect, count)
    }
    assert supported == {job: tuple(triggers) for job, triggers in r.JOB_TRIGGERS.items()}
