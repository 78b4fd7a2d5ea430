"""Typed configuration of the stages: one set of keys for CLI flags, environment and defaults.

Every option is a CLI flag `--some-key`, an environment variable `CARSTREAM_SOME_KEY` and a
default, in that order of precedence. Invalid values are argparse errors (usage + message),
never tracebacks. The same keys are what the operator passes as SparkApplication arguments.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ENV_PREFIX = "CARSTREAM_"
LOCAL_STATE_DIR = ".carstream"

TriggerKind = Literal["processingTime", "availableNow", "realTime"]
TRIGGER_KINDS: tuple[TriggerKind, ...] = ("processingTime", "availableNow", "realTime")
Combinator = Literal["any", "all"]

_INTERVAL = re.compile(
    r"^\s*(\d+)\s*(ms|milliseconds?|s|seconds?|m|min|minutes?|h|hours?)\s*$", re.IGNORECASE
)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_UNIT_WORDS = {"ms": "millisecond", "s": "second", "m": "minute", "h": "hour"}


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _interval_parts(text: str) -> tuple[int, str]:
    """The amount and the unit key (ms, s, m, h) of an interval such as `5 seconds`, `500ms`."""
    match = _INTERVAL.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not an interval: use a number and a unit, e.g. '5 seconds', "
            "'15 minutes', '500 milliseconds'"
        )
    amount, unit = int(match.group(1)), match.group(2).lower()
    return amount, "ms" if unit.startswith("ms") or unit.startswith("milli") else unit[0]


def interval_seconds(text: str) -> float:
    """Seconds in a Spark-style interval such as `5 seconds`, `15 minutes`, `500ms`."""
    amount, unit = _interval_parts(text)
    return amount * _UNIT_SECONDS[unit]


def interval_arg(text: str) -> str:
    """argparse type: an interval longer than zero, in the words Spark's interval parser takes
    (`500ms` -> `500 milliseconds`, `1 min` -> `1 minute`): Spark refuses abbreviations."""
    try:
        amount, unit = _interval_parts(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if amount <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than zero")
    word = _UNIT_WORDS[unit]
    return f"{amount} {word}" if amount == 1 else f"{amount} {word}s"


def positive_int_arg(text: str) -> int:
    """argparse type: an integer above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def positive_float_arg(text: str) -> float:
    """argparse type: a number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def non_negative_float_arg(text: str) -> float:
    """argparse type: a number, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def _color_family(text: str) -> tuple[str, tuple[str, ...]]:
    name, sep, colors = text.partition("=")
    members = tuple(c.strip() for c in colors.split(",") if c.strip())
    if not sep or not name.strip() or not members:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a color family: use NAME=COLOR[,COLOR...], e.g. silver=Silver,Gray"
        )
    return name.strip().lower(), members


def add_option(
    parser: argparse.ArgumentParser | Any,
    flag: str,
    *,
    default: Any = None,
    type: Callable[[str], Any] = str,
    help: str,
    choices: tuple[str, ...] | None = None,
) -> None:
    """An option whose default comes from its environment variable, then from `default`."""
    env = env_name(flag)
    raw = os.environ.get(env)
    if raw is not None:
        try:
            default = type(raw)
        except (argparse.ArgumentTypeError, ValueError) as error:
            raise SystemExit(f"carstream: error: environment variable {env}: {error}") from None
    shown = "" if default is None else f" (default: {default})"
    parser.add_argument(
        flag,
        default=default,
        type=type,
        choices=choices,
        help=f"{help}{shown}; env {env}",
    )


# ---------------------------------------------------------------------------------------------
# Settings groups. Each has `add_arguments(parser)` and `from_args(args)`.


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "localhost:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    ca_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @staticmethod
    def add_arguments(
        parser: argparse.ArgumentParser,
        *,
        bootstrap_default: str | None = "localhost:9092",
        bootstrap_help: str = "Kafka bootstrap servers, host:port[,host:port]",
    ) -> None:
        group = parser.add_argument_group("Kafka")
        add_option(group, "--bootstrap-servers", default=bootstrap_default, help=bootstrap_help)
        add_option(
            group,
            "--kafka-security-protocol",
            default="PLAINTEXT",
            choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
            help="Kafka security protocol",
        )
        add_option(
            group,
            "--kafka-sasl-mechanism",
            choices=("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"),
            help="SASL mechanism; credentials come only from CARSTREAM_KAFKA_USERNAME and "
            "CARSTREAM_KAFKA_PASSWORD",
        )
        add_option(
            group,
            "--kafka-ca-file",
            help="PEM file of the CA that signed the brokers' certificates",
        )

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] = os.environ
    ) -> KafkaSettings:
        return cls(
            bootstrap_servers=args.bootstrap_servers,
            security_protocol=args.kafka_security_protocol,
            sasl_mechanism=args.kafka_sasl_mechanism,
            ca_file=args.kafka_ca_file,
            username=environ.get(ENV_PREFIX + "KAFKA_USERNAME"),
            password=environ.get(ENV_PREFIX + "KAFKA_PASSWORD"),
        )

    def client_config(self) -> dict[str, str]:
        """Properties for librdkafka clients (confluent-kafka)."""
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.username or ""
            config["sasl.password"] = self.password or ""
        if self.ca_file:
            config["ssl.ca.location"] = self.ca_file
        return config

    def spark_options(self) -> dict[str, str]:
        """`kafka.`-prefixed options for Spark's Kafka source and sink (Java client names)."""
        options = {
            "kafka.bootstrap.servers": self.bootstrap_servers,
            "kafka.security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if self.sasl_mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            options["kafka.sasl.mechanism"] = self.sasl_mechanism
            options["kafka.sasl.jaas.config"] = (
                f'{module} required username="{self.username or ""}" '
                f'password="{self.password or ""}";'
            )
        if self.ca_file:
            options["kafka.ssl.truststore.type"] = "PEM"
            options["kafka.ssl.truststore.location"] = self.ca_file
        return options


@dataclass(frozen=True)
class Topics:
    sensors: str = "sensors-sample"
    enriched: str = "samples-enriched"
    alerts: str = "alert-data"
    counts: str = "alert-counts"
    dlq: str = "sensors-dlq"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("topics")
        defaults = Topics()
        add_option(group, "--topic-sensors", default=defaults.sensors, help="raw sensor events")
        add_option(group, "--topic-enriched", default=defaults.enriched, help="enriched events")
        add_option(group, "--topic-alerts", default=defaults.alerts, help="alerts")
        add_option(group, "--topic-counts", default=defaults.counts, help="alert counts per window")
        add_option(group, "--topic-dlq", default=defaults.dlq, help="dead letters of every stage")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Topics:
        return cls(
            args.topic_sensors,
            args.topic_enriched,
            args.topic_alerts,
            args.topic_counts,
            args.topic_dlq,
        )

    def all(self) -> tuple[str, ...]:
        return (self.sensors, self.enriched, self.alerts, self.counts, self.dlq)


S3_SCHEMES = ("s3a://", "s3://")
DEFAULT_CREDENTIALS_PROVIDER = "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"


def is_s3(location: str) -> bool:
    """True for an s3a:// (or s3://) URL, False for a folder or file:// URL."""
    return location.startswith(S3_SCHEMES)


def _endpoint_url(text: str) -> str:
    if not re.match(r"^https?://[^/\s]+/?$", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an endpoint URL: use http(s)://host[:port], e.g. "
            "http://127.0.0.1:7070 or https://s3.eu-west-1.amazonaws.com"
        )
    return text.rstrip("/")


@dataclass(frozen=True)
class S3Settings:
    """Which S3 service an s3a:// location means: AWS (no endpoint) or an S3-compatible server.

    Credentials are never settings: both Spark (s3a) and boto3 take them from the standard AWS
    chain (environment, profile, web identity, container, instance).
    """

    endpoint: str | None = None
    region: str | None = None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("S3 (for s3a:// locations)")
        add_option(
            group,
            "--s3-endpoint",
            type=_endpoint_url,
            help="an S3-compatible server, http(s)://host:port, reached with path-style "
            "requests (default: AWS S3, or AWS_ENDPOINT_URL_S3 when set). Credentials come "
            "from the AWS chain: environment, profile, web identity",
        )
        add_option(
            group,
            "--s3-region",
            help="region the requests are signed for (default: AWS_REGION, else us-east-1 "
            "with --s3-endpoint, else the bucket's own region)",
        )

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] = os.environ
    ) -> S3Settings:
        endpoint = args.s3_endpoint or environ.get("AWS_ENDPOINT_URL_S3") or None
        region = args.s3_region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
        return cls(endpoint=endpoint, region=region or ("us-east-1" if endpoint else None))

    def hadoop_conf(self) -> dict[str, str]:
        """s3a's settings (Hadoop configuration keys, without `spark.hadoop.`)."""
        conf = {"fs.s3a.aws.credentials.provider": DEFAULT_CREDENTIALS_PROVIDER}
        if self.endpoint:
            conf["fs.s3a.endpoint"] = self.endpoint
            # Host names of S3-compatible servers carry no bucket: virtual-host requests fail.
            conf["fs.s3a.path.style.access"] = "true"
        if self.region:
            # Without it s3a signs a non-AWS endpoint for us-east-2, which a strict server
            # refuses (AuthorizationHeaderMalformed).
            conf["fs.s3a.endpoint.region"] = self.region
        return conf


def s3_if_used(s3: S3Settings, *locations: str) -> S3Settings | None:
    """`s3` when one of the locations is on S3 (the session then needs s3a), else None."""
    return s3 if any(is_s3(location) for location in locations) else None


@dataclass(frozen=True)
class StorageSettings:
    warehouse: str = f"{LOCAL_STATE_DIR}/warehouse"
    s3: S3Settings = field(default_factory=S3Settings)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, *, with_s3: bool = True) -> None:
        """`with_s3=False` when the command has the S3 options already (a streaming stage)."""
        add_option(
            parser.add_argument_group("storage"),
            "--warehouse",
            default=StorageSettings.warehouse,
            help="where the dimensions live: a local folder or an s3a:// URL",
        )
        if with_s3:
            S3Settings.add_arguments(parser)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StorageSettings:
        return cls(warehouse=args.warehouse, s3=S3Settings.from_args(args))

    def dim_path(self, table: str) -> str:
        return f"{self.warehouse.rstrip('/')}/dims/{table}"

    @property
    def s3_if_used(self) -> S3Settings | None:
        return s3_if_used(self.s3, self.warehouse)


DEFAULT_CHECKPOINT_ROOT = f"{LOCAL_STATE_DIR}/checkpoints"


def add_checkpoint_root(group: Any) -> None:
    add_option(
        group,
        "--checkpoint-root",
        default=DEFAULT_CHECKPOINT_ROOT,
        help="folder or s3a:// URL under which each stage keeps <root>/<stage>",
    )


@dataclass(frozen=True)
class StreamSettings:
    """How a streaming stage runs: its checkpoint, trigger and shuffle width."""

    checkpoint_location: str
    trigger: TriggerKind = "processingTime"
    trigger_interval: str = "5 seconds"
    shuffle_partitions: int = 2
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    idle_stop_seconds: float | None = None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("streaming")
        add_checkpoint_root(group)
        add_option(
            group,
            "--checkpoint-location",
            help="this stage's checkpoint (default: <checkpoint-root>/<stage>); keep it "
            "stable across restarts so nothing is lost or repeated",
        )
        add_option(
            group,
            "--trigger",
            default="processingTime",
            choices=TRIGGER_KINDS,
            help="processingTime: micro-batches every interval; availableNow: drain what is "
            "there and exit; realTime: low-latency mode, interval = checkpoint interval",
        )
        add_option(
            group,
            "--trigger-interval",
            default="5 seconds",
            type=interval_arg,
            help="micro-batch interval (processingTime) or checkpoint interval (realTime)",
        )
        add_option(
            group,
            "--shuffle-partitions",
            default=2,
            type=positive_int_arg,
            help="spark.sql.shuffle.partitions; frozen into the checkpoint at the first run",
        )
        add_option(
            group,
            "--starting-offsets",
            default="earliest",
            choices=("earliest", "latest"),
            help="where a new checkpoint starts reading its input topic",
        )
        add_option(
            group,
            "--max-offsets-per-trigger",
            type=positive_int_arg,
            help="at most this many records per micro-batch (default: all available)",
        )
        add_option(
            group,
            "--idle-stop-seconds",
            type=positive_float_arg,
            help="processingTime only: stop cleanly (exit 0, checkpoint kept) after this many "
            "seconds without input rows (default: run until stopped)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace, stage: str) -> StreamSettings:
        location = args.checkpoint_location or f"{args.checkpoint_root.rstrip('/')}/{stage}"
        return cls(
            checkpoint_location=location,
            trigger=args.trigger,
            trigger_interval=args.trigger_interval,
            shuffle_partitions=args.shuffle_partitions,
            starting_offsets=args.starting_offsets,
            max_offsets_per_trigger=args.max_offsets_per_trigger,
            idle_stop_seconds=args.idle_stop_seconds,
        )


@dataclass(frozen=True)
class DimsSettings:
    num_cars: int = 20
    seed: int = 42

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("dimensions")
        add_option(
            group,
            "--num-cars",
            default=20,
            type=positive_int_arg,
            help="rows of the cars dimension",
        )
        add_option(
            group, "--seed", default=42, type=int, help="seed: the same seed gives the same cars"
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DimsSettings:
        return cls(num_cars=args.num_cars, seed=args.seed)


@dataclass(frozen=True)
class GeneratorSettings:
    rate: float = 20.0
    num_cars: int | None = None
    time_limit: float | None = None
    max_events: int | None = None
    seed: int | None = None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("generator")
        add_option(
            group,
            "--rate",
            default=20.0,
            type=positive_float_arg,
            help="events per second over all cars; each tick sends one event per car",
        )
        add_option(
            group,
            "--num-cars",
            type=positive_int_arg,
            help="use the first N cars of the cars dimension (default: all of them)",
        )
        add_option(
            group,
            "--time-limit",
            type=positive_float_arg,
            help="stop cleanly after this many seconds",
        )
        add_option(
            group,
            "--max-events",
            type=_non_negative_int,
            help="stop cleanly after this many events",
        )
        add_option(group, "--seed", type=int, help="seed for reproducible values and event ids")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GeneratorSettings:
        return cls(
            rate=args.rate,
            num_cars=args.num_cars,
            time_limit=args.time_limit,
            max_events=args.max_events,
            seed=args.seed,
        )


@dataclass(frozen=True)
class DetectSettings:
    speed_limit: int = 120
    rpm_limit: int = 6000
    combinator: Combinator = "any"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("alert rules")
        add_option(
            group,
            "--speed-limit",
            default=120,
            type=_non_negative_int,
            help="rule 'speed': speed > this",
        )
        add_option(
            group,
            "--rpm-limit",
            default=6000,
            type=_non_negative_int,
            help="rule 'rpm': rpm > this",
        )
        add_option(
            group,
            "--combinator",
            default="any",
            choices=("any", "all"),
            help="an event is an alert when any (or all) of the rules speed, gear, rpm fire",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DetectSettings:
        return cls(
            speed_limit=args.speed_limit, rpm_limit=args.rpm_limit, combinator=args.combinator
        )


DEFAULT_COLOR_FAMILIES: dict[str, tuple[str, ...]] = {
    "black": ("Black",),
    "white": ("White",),
    "silver": ("Silver", "Gray", "Grey"),
}


@dataclass(frozen=True)
class CountSettings:
    window: str = "15 minutes"
    slide: str = "1 minute"
    watermark: str = "2 minutes"
    color_families: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_COLOR_FAMILIES)
    )

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("alert counter")
        add_option(group, "--window", default="15 minutes", type=interval_arg, help="window length")
        add_option(group, "--slide", default="1 minute", type=interval_arg, help="window slide")
        add_option(
            group,
            "--watermark",
            default="2 minutes",
            type=interval_arg,
            help="how late an alert may arrive; also the horizon of event_id deduplication",
        )
        group.add_argument(
            "--color-family",
            action="append",
            type=_color_family,
            metavar="NAME=COLOR[,COLOR]",
            help="a counted color family, case-insensitive; repeat for each. Default: "
            "black=Black white=White silver=Silver,Gray,Grey (column num_of_<NAME>)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CountSettings:
        families = dict(args.color_family) if args.color_family else dict(DEFAULT_COLOR_FAMILIES)
        return cls(
            window=args.window, slide=args.slide, watermark=args.watermark, color_families=families
        )
