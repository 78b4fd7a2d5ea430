"""The `carstream` command: `stage NAME`, `broker`, `kafka-setup`, `run`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from carstream import broker_cli, kafka_setup, runner, stages


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carstream",
        description="Car-telemetry streaming pipeline on Spark and Kafka.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stages.add_cli(commands)
    broker_cli.add_cli(commands)
    kafka_setup.add_cli(commands)
    runner.add_cli(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
