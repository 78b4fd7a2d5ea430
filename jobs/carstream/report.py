"""`carstream report`: a picture of the alert windows, from the alert-counts topic.

Reads --topic-counts from its start to its current end, keeps the latest value of each window
(the count stage writes a window again, under the same key, whenever it changes), writes the
PNG of --png (alerts per window stacked by color family, the maximum speed as a line) and
prints one line: how many windows, the time they cover, the alerts in the newest window.

Exit 1 with one line on stderr when the topic cannot be read or the picture written, 2 on
usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from carstream.config import KafkaSettings, Topics, positive_float_arg
from carstream.kafka_admin import read_to_end
from carstream.windows_chart import WindowCounts, draw

EXIT_FAILED = 1
DEFAULT_TIMEOUT_SECONDS = 60.0


def report(args: argparse.Namespace) -> int:
    kafka, topic = KafkaSettings.from_args(args), Topics.from_args(args).counts
    try:
        messages = read_to_end(kafka, topic, timeout=args.timeout)
    except (KafkaException, TimeoutError) as error:
        print(f"carstream report: cannot read {topic}: {error}", file=sys.stderr)
        return EXIT_FAILED
    counts = WindowCounts.from_messages(message.value() for message in messages)
    try:
        summary = draw(counts, args.png, title=f"Alerts per window of {topic}")
    except OSError as error:
        print(f"carstream report: cannot write {args.png}: {error}", file=sys.stderr)
        return EXIT_FAILED
    skipped = ""
    if counts.skipped:
        skipped = "; 1 record was" if counts.skipped == 1 else f"; {counts.skipped} records were"
        skipped += " not a window's JSON"
    print(f"{topic}: {summary.line()}{skipped}; picture in {args.png}")
    return 0


def add_cli(commands: Any) -> None:
    """Adds `report` to the `carstream` sub-commands."""
    parser = commands.add_parser(
        "report",
        help="draw the alert windows of the alert-counts topic as a PNG",
        description=(__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--png", type=Path, required=True, metavar="PATH", help="the picture to write"
    )
    parser.add_argument(
        "--timeout",
        type=positive_float_arg,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="how long to wait for the broker at each step of reading (default: %(default)g)",
    )
    KafkaSettings.add_arguments(parser)
    Topics.add_arguments(parser)
    parser.set_defaults(handler=report)
