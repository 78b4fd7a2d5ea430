"""Assemble the umbrella chart charts/carstream-stack with its dependencies, without a network.

`helm dependency build charts/carstream-stack` fetches the operator charts from their
repositories (Chart.yaml names the real ones). Where those cannot be reached, this writes a
copy of the umbrella to OUT/carstream-stack whose charts/ folder is filled from what is at
hand: the core chart (packaged from charts/carstream), spark-operator's chart from the
toolchain cache (`build/bootstrap spark-operator-chart` packs it from spark-operator's Go
module), and any archive given with --chart. A dependency that is not at hand is left out of
the copy with --without NAME (helm refuses a chart whose listed dependencies are missing, even
disabled ones); its values are then ignored. The copy's Chart.yaml lists exactly what its
charts/ holds, and `helm dependency list` must call each one ok.

    .venv/bin/python scripts/stack_chart.py OUT --without strimzi-kafka-operator
    .venv/bin/helm install carstream OUT/carstream-stack -n carstream -f values-local.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from carstream import toolchain

CHARTS = toolchain.REPO_ROOT / "charts"
STACK = CHARTS / "carstream-stack"
CORE = CHARTS / "carstream"


class StackError(RuntimeError):
    """The umbrella cannot be assembled; the message says what to pass or to build."""


def helm(*args: str | Path) -> str:
    command = [str(toolchain.binary("helm")), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"{' '.join(command)} failed:\n{result.stderr.strip()}")
    return result.stdout


def chart_name(archive: Path) -> str:
    """The chart name of NAME-VERSION.tgz (versions start with a digit)."""
    stem = archive.name.removesuffix(".tgz")
    parts = stem.split("-")
    for index in range(len(parts) - 1, 0, -1):
        if parts[index][:1].isdigit():
            return "-".join(parts[:index])
    raise StackError(f"{archive}: not a NAME-VERSION.tgz chart archive")


def archives_at_hand(extra: Sequence[Path]) -> dict[str, Path]:
    """Chart archives by name: spark-operator's from the toolchain cache, then --chart ones."""
    found: dict[str, Path] = {}
    with contextlib.suppress(toolchain.ToolchainMissing):
        found["spark-operator"] = toolchain.spark_operator_chart()
    for archive in extra:
        if not archive.is_file():
            raise StackError(f"--chart {archive}: no such file")
        found[chart_name(archive)] = archive
    return found


def assemble(out: Path, without: Sequence[str] = (), extra: Sequence[Path] = ()) -> Path:
    """OUT/carstream-stack with every dependency in its charts/; returns its path."""
    chart = out / STACK.name
    if chart.exists():
        shutil.rmtree(chart)
    shutil.copytree(STACK, chart, ignore=shutil.ignore_patterns("charts"))
    (chart / "charts").mkdir()
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    listed = {dependency["name"] for dependency in metadata["dependencies"]}
    unknown = sorted(set(without) - listed)
    if unknown:
        raise StackError(f"--without {', '.join(unknown)}: not a dependency of {STACK.name}")
    kept = [d for d in metadata["dependencies"] if d["name"] not in without]
    available = archives_at_hand(extra)
    for dependency in kept:
        name = dependency["name"]
        if name == CORE.name:
            helm("package", CORE, "--destination", chart / "charts")
        elif name in available:
            shutil.copy2(available[name], chart / "charts" / available[name].name)
        else:
            raise StackError(
                f"the {name} chart is not at hand: pass --chart {name}-VERSION.tgz, or "
                f"--without {name} to leave it out"
                + (
                    " (or run build/bootstrap spark-operator-chart)"
                    if name == "spark-operator"
                    else ""
                )
            )
    metadata["dependencies"] = kept
    (chart / "Chart.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
    statuses = [line.split() for line in helm("dependency", "list", chart).splitlines()[1:]]
    wrong = [row for row in statuses if row and row[-1] != "ok"]
    if wrong:
        raise StackError(f"helm dependency list {chart}: {wrong}")
    return chart


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack_chart.py",
        description="Copy charts/carstream-stack to OUT/carstream-stack with its dependencies "
        "in charts/, from local sources only.",
    )
    parser.add_argument("out", type=Path, help="folder to write carstream-stack/ into")
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="NAME",
        help="leave this dependency out (e.g. strimzi-kafka-operator); repeatable",
    )
    parser.add_argument(
        "--chart",
        action="append",
        default=[],
        type=Path,
        metavar="ARCHIVE",
        help="a NAME-VERSION.tgz chart archive for a dependency; repeatable",
    )
    args = parser.parse_args(argv)
    try:
        chart = assemble(args.out, args.without, args.chart)
    except (StackError, toolchain.ToolchainMissing) as error:
        print(f"stack_chart.py: {error}", file=sys.stderr)
        return 1
    print(chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
