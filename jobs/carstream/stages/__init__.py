"""The pipeline's stages, one module each, and the `carstream stage NAME` command.

Every stage module has `add_arguments(parser)` and `main(args) -> int` (the exit code), a
typed `run(...)` for in-process callers, and pure DataFrame transforms. The streaming stages
(enrich, detect, count) also have `start(spark, ...)`, which starts their queries on a given
session and returns them without blocking.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

STAGE_MODULES: dict[str, str] = {
    "dims": "carstream.stages.dims",
    "generate": "carstream.stages.generate",
    "enrich": "carstream.stages.enrich",
    "detect": "carstream.stages.detect",
    "count": "carstream.stages.count",
}

STAGE_SUMMARIES: dict[str, str] = {
    "dims": "write the car_models, car_colors and cars dimensions (Parquet, seeded)",
    "generate": "produce sensor events for the cars of the dimension to Kafka",
    "enrich": "join sensor events with the dimensions (sensors-sample -> samples-enriched)",
    "detect": "keep the enriched events that break a rule (samples-enriched -> alert-data)",
    "count": "count alerts per sliding event-time window (alert-data -> alert-counts, console)",
}


class StageUsageError(ValueError):
    """Settings that each parse but do not make sense together (reported like a bad flag)."""


def configure_logging() -> None:
    """carstream's own messages from INFO up, other libraries' (py4j...) from WARNING up."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("carstream").setLevel(logging.INFO)


def stage_module(name: str) -> ModuleType:
    """The module of a stage, imported on first use."""
    return importlib.import_module(STAGE_MODULES[name])


def _handler(
    module: ModuleType, parser: argparse.ArgumentParser
) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        try:
            code: int = module.main(args)
        except StageUsageError as error:
            parser.error(str(error))
        return code

    return handle


def add_cli(commands: Any) -> None:
    """Adds `stage` with one sub-command per stage to the `carstream` sub-commands."""
    stage_parser = commands.add_parser(
        "stage",
        help="run one stage of the pipeline (what a SparkApplication driver runs)",
        description="Run one stage of the pipeline against a given Kafka and warehouse. "
        "Every option also reads an environment variable (named in its help).",
    )
    stage_commands = stage_parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name in STAGE_MODULES:
        try:
            module = stage_module(name)
        except ModuleNotFoundError as error:
            if error.name != STAGE_MODULES[name]:
                raise
            continue  # a stage whose module is not written yet has no sub-command
        parser = stage_commands.add_parser(
            name,
            help=STAGE_SUMMARIES[name],
            description=(module.__doc__ or STAGE_SUMMARIES[name]).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parser)
        parser.set_defaults(handler=_handler(module, parser))
