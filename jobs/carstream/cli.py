"""The `carstream` command: `stage NAME`, `broker`, `kafka-setup`, `run`, `storage`, `report`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from carstream import broker_cli, kafka_setup, logs, report, runner, stages, storage_cli
from carstream.config import add_option


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
    storage_cli.add_cli(commands)
    report.add_cli(commands)
    _remember_parsers(parser)
    return parser


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Every (sub-)command records its own parser as `command_parser`: the innermost command
    given on the command line wins, because argparse applies a sub-parser's defaults last.
    Every command that runs (a leaf) gets --log-format."""
    parser.set_defaults(command_parser=parser)
    sub_commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in sub_commands:
        for sub_parser in action.choices.values():
            _remember_parsers(sub_parser)
    if not sub_commands:
        add_option(
            parser,
            "--log-format",
            default="text",
            choices=logs.LOG_FORMATS,
            help="log lines as plain text or as one JSON object per line",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse reports leftovers with the top-level usage; the user needs the usage of
        # the command they called, which lists the flags it takes.
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logs.configure(args.log_format)
    logs.set_context(
        command=args.command,
        stage=getattr(args, "stage", None),
        pipeline=getattr(args, "pipeline", None),
    )
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
