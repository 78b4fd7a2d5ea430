"""`carstream storage`: check the warehouse and checkpoint locations, list and reset checkpoints.

  check        the locations are reachable and writable (an object is written and deleted);
               --create-bucket creates a missing bucket first
  checkpoints  each stage's checkpoint under the checkpoint root: newest micro-batch planned
               and committed, files, bytes, last write
  reset STAGE  delete one stage's checkpoint, so that it starts over from its topic's
               --starting-offsets at its next run; the other stages keep their positions.
               Stop the stage first (suspend it, on Kubernetes).

Locations are folders or s3a:// URLs; --s3-endpoint names an S3-compatible server.
Credentials come only from the AWS chain (environment, profile, web identity). An error is one
line naming the location and the cause, and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from carstream.config import (
    S3Settings,
    StorageSettings,
    add_checkpoint_root,
)
from carstream.storage import (
    Location,
    StorageError,
    checkpoints,
    delete_checkpoint,
    store_for,
)

EXIT_FAILED = 1


def _checkpoint_root(args: argparse.Namespace) -> str:
    root: str = args.checkpoint_root.rstrip("/")
    return f"{root}/{args.pipeline}" if args.pipeline else root


def _add_root(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("checkpoints")
    add_checkpoint_root(group)
    group.add_argument(
        "--pipeline",
        help="on Kubernetes: the Pipeline's name; its stages keep <root>/<pipeline>/<stage>",
    )


def check(args: argparse.Namespace) -> int:
    storage = StorageSettings.from_args(args)
    for url in dict.fromkeys((storage.warehouse, args.checkpoint_root)):
        location = Location.parse(url)
        print(store_for(location, storage.s3).check(location, create_bucket=args.create_bucket))
    return 0


def list_checkpoints(args: argparse.Namespace) -> int:
    root = _checkpoint_root(args)
    found = checkpoints(root, S3Settings.from_args(args))
    if not found:
        print(f"{root}: no checkpoints")
    for checkpoint in found:
        print(checkpoint.line())
    return 0


def reset(args: argparse.Namespace) -> int:
    root = _checkpoint_root(args)
    deleted = delete_checkpoint(root, args.stage, S3Settings.from_args(args))
    print(f"{root}/{args.stage}: deleted ({deleted} files); the stage starts over at its next run")
    return 0


def _handler(command: Any, name: str) -> Any:
    def handle(args: argparse.Namespace) -> int:
        try:
            code: int = command(args)
        except StorageError as error:
            print(f"carstream storage {name}: {error}", file=sys.stderr)
            return EXIT_FAILED
        return code

    return handle


def add_cli(commands: Any) -> None:
    """Adds `storage` and its sub-commands to the `carstream` sub-commands."""
    parser = commands.add_parser(
        "storage",
        help="check the warehouse and checkpoint locations; list or reset checkpoints",
        description=(__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="storage_command", required=True, metavar="COMMAND")

    check_parser = sub.add_parser(
        "check", help="the warehouse and checkpoint root are reachable and writable"
    )
    StorageSettings.add_arguments(check_parser)
    add_checkpoint_root(check_parser.add_argument_group("checkpoints"))
    check_parser.add_argument(
        "--create-bucket", action="store_true", help="create a bucket that does not exist"
    )
    check_parser.set_defaults(handler=_handler(check, "check"))

    list_parser = sub.add_parser("checkpoints", help="each stage's checkpoint under the root")
    _add_root(list_parser)
    S3Settings.add_arguments(list_parser)
    list_parser.set_defaults(handler=_handler(list_checkpoints, "checkpoints"))

    reset_parser = sub.add_parser(
        "reset", help="delete one stage's checkpoint: the stage starts over"
    )
    reset_parser.add_argument("stage", help="the stage, e.g. count")
    _add_root(reset_parser)
    S3Settings.add_arguments(reset_parser)
    reset_parser.set_defaults(handler=_handler(reset, "reset"))
