"""The pipeline's stages, one module each, and the `carstream stage NAME` command.

Every stage module has `add_arguments(parser)` and `main(args) -> int` (the exit code), a
typed `run(...)` for in-process callers, and pure DataFrame transforms. The streaming stages
(enrich, detect, count) also have `start(spark, ...)`, which starts their queries on a given
session and returns them without blocking.

A stage that fails raises; `carstream stage NAME` (`_handler`) is the one place that turns the
exception into the container's termination message (carstream.termination) and exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from carstream import logs, termination
from carstream.config import ENV_PREFIX

EXIT_FAILED = 1
STAGE_MODULES: dict[str, str] = {
    "dims": "carstream.stages.dims",
    "generate": "carstream.stages.generate",
    "enrich": "carstream.stages.enrich",
    "detect": "carstream.stages.detect",
    "count": "carstream.stages.count",
    "enrich-detect": "carstream.stages.enrich_detect",
}

STAGE_SUMMARIES: dict[str, str] = {
    "dims": "write the car_models, car_colors and cars dimensions (Parquet, seeded)",
    "generate": "produce sensor events for the cars of the dimension to Kafka",
    "enrich": "join sensor events with the dimensions (sensors-sample -> samples-enriched)",
    "detect": "keep the enriched events that break a rule (samples-enriched -> alert-data)",
    "count": "count alerts per sliding event-time window (alert-data -> alert-counts, console)",
    "enrich-detect": "enrich and detect in one pass (sensors-sample -> samples-enriched and "
    "alert-data)",
}


class StageUsageError(ValueError):
    """Settings that each parse but do not make sense together (reported like a bad flag)."""


def configure_logging() -> None:
    """carstream's own messages from INFO up; the handlers (text or JSON) are `carstream`'s
    (carstream.logs.configure), or text ones when a stage runs without it."""
    if not logging.getLogger().handlers:
        logs.configure()
    logging.getLogger("carstream").setLevel(logging.INFO)


def stage_module(name: str) -> ModuleType:
    """The module of a stage, imported on first use."""
    return importlib.import_module(STAGE_MODULES[name])


def _handler(
    name: str, module: ModuleType, parser: argparse.ArgumentParser
) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        try:
            code: int = module.main(args)
        except StageUsageError as error:
            parser.error(str(error))
        except Exception as error:
            if not report_failure(name, error).described:
                raise  # not foreseen: its traceback goes to the log
            return EXIT_FAILED
        return code

    return handle


def report_failure(name: str, error: Exception) -> termination.Termination:
    """A stage ended with `error`: its reason and message go to the container's termination
    message (what the operator shows on the PipelineStage) and to stderr."""
    ended = termination.classify(error, kafka_user=os.environ.get(ENV_PREFIX + "KAFKA_USERNAME"))
    termination.write(ended)
    print(f"carstream stage {name}: {ended.line()}", file=sys.stderr)
    return ended


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
        parser.set_defaults(handler=_handler(name, module, parser))
