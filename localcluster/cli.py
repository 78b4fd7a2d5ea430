"""`python -m localcluster up|down|status|load-image|build-image`."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from carstream.toolchain import ToolchainMissing
from localcluster import cluster, images
from localcluster.layout import RunDir
from localcluster.processes import ClusterError


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m localcluster",
        description="A real two-node Kubernetes cluster on this machine (see localcluster/).",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("up", help="start the cluster (needs root and build/bootstrap cluster)")
    commands.add_parser("down", help="stop it and restore the host (also after a crash)")
    commands.add_parser("status", help="the recorded processes and the nodes")
    load = commands.add_parser("load-image", help="copy an image from dockerd into both nodes")
    load.add_argument("image", help="a tag known to the cluster's dockerd, e.g. carstream:e2e")
    build = commands.add_parser("build-image", help="docker build on the cluster's dockerd")
    build.add_argument("tag")
    build.add_argument("--file", type=Path, default=Path("Dockerfile"), help="the Dockerfile")
    build.add_argument("--context", type=Path, default=Path("."), help="the build context")
    build.add_argument(
        "--build-arg", type=_key_value, action="append", default=[], metavar="NAME=VALUE"
    )
    build.add_argument(
        "--secret",
        type=_key_value,
        action="append",
        default=[],
        metavar="ID=FILE",
        help="a BuildKit secret, e.g. extra-ca=/etc/ssl/certs/ca-certificates.crt",
    )
    build.add_argument("--target", help="the stage to build")
    build.add_argument("--load", action="store_true", help="then load it into both nodes")
    return top


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    run = RunDir.default()
    # SIGTERM and SIGHUP end `up` like Ctrl+C: it then brings down what it started.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    try:
        return _dispatch(arguments, run)
    except (ClusterError, ToolchainMissing) as error:
        print(f"localcluster: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("localcluster: interrupted", file=sys.stderr)
        return 130


def _dispatch(arguments: argparse.Namespace, run: RunDir) -> int:
    started = time.monotonic()
    if arguments.command == "up":
        timings = cluster.up(run)
        print(f"cluster up in {time.monotonic() - started:.1f}s ({timings})")
        print(f"export KUBECONFIG={run.admin_kubeconfig}")
        print(f"export DOCKER_HOST=unix://{run.docker_socket}")
    elif arguments.command == "down":
        problems = cluster.down(run)
        for problem in problems:
            print(f"not restored: {problem}", file=sys.stderr)
        if problems:
            return 1
        print(f"cluster down, host restored ({time.monotonic() - started:.1f}s)")
    elif arguments.command == "status":
        print("\n".join(cluster.status(run)))
    elif arguments.command == "load-image":
        seconds = images.load_image(run, arguments.image)
        print(f"loaded {arguments.image} into both nodes in {seconds:.1f}s")
    elif arguments.command == "build-image":
        seconds = images.build_image(
            run,
            arguments.tag,
            arguments.file,
            arguments.context,
            build_args=dict(arguments.build_arg),
            secrets={key: Path(value) for key, value in arguments.secret},
            target=arguments.target,
        )
        print(f"built {arguments.tag} in {seconds:.1f}s")
        if arguments.load:
            seconds = images.load_image(run, arguments.tag)
            print(f"loaded {arguments.tag} into both nodes in {seconds:.1f}s")
    return 0
