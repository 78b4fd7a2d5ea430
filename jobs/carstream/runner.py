"""`carstream run`: the whole pipeline on one machine, with one command.

A Kafka broker (embedded, unless --bootstrap-servers names one), the five topics, the three
dimensions, the generator (a thread) and the streams (one local Spark session): enrich and
detect fused into one query (stages.enrich_detect; --no-fuse: two), and count; with live
progress read from the topics' end offsets and the counter's windows as they change. It
stops after --duration seconds or on Ctrl+C / SIGTERM, in order: generator, streams, Spark,
broker.

State lives under --state-dir (default .carstream): warehouse/ (dimensions),
checkpoints/<stage> and kafka/ (the embedded broker's data). Running again resumes from the
checkpoints against the same topics; --fresh wipes them first.

--storage s3 keeps the warehouse and checkpoints in the bucket `carstream` of an S3-compatible
server that the run starts and stops like the broker (versitygw; its files under
<state-dir>/s3), read and written through s3a and boto3 as on AWS. --warehouse and
--checkpoint-root put them anywhere else: folders, or s3a:// URLs on AWS or on the server of
--s3-endpoint, with credentials from the AWS chain (environment, profile, web identity).

--seed decides the cars (the same seed, the same dimensions); the events are random on every
run, so that event ids stay unique across runs on the same state.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from carstream import broker as embedded
from carstream import logs, spark_io, storage, toolchain
from carstream.config import (
    ENV_PREFIX,
    LOCAL_STATE_DIR,
    CountSettings,
    DetectSettings,
    DimsSettings,
    GeneratorSettings,
    KafkaSettings,
    S3Settings,
    StorageSettings,
    StreamSettings,
    Topics,
    interval_arg,
    interval_seconds,
    positive_int_arg,
    s3_if_used,
)
from carstream.kafka_admin import TopicAdmin
from carstream.lineage import LineageSettings
from carstream.metrics import GeneratorMetrics, MetricsSettings
from carstream.progress import TopicProgress
from carstream.s3_server import S3Server, S3ServerError
from carstream.shutdown import StopSignals, stop_requested_on_signals
from carstream.stages import StageUsageError, count, detect, dims, enrich, enrich_detect, generate
from carstream.stages.streaming import StreamJob, observe_queries
from carstream.windows_chart import WindowChartWriter

STATE_FOLDERS = ("warehouse", "checkpoints", "kafka", "s3")
S3_BUCKET = "carstream"
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
SPARK_EXIT_SECONDS = 30
logger = logging.getLogger("carstream.run")
QUERY_STOP_GRACE_SECONDS = 15
DEFAULT_SPARK_MASTER = "local[*]"


class PipelineFailed(RuntimeError):
    """A part of the running pipeline (a query, the generator, the broker) stopped on error."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    state_dir: Path
    fresh: bool
    duration: float | None
    trigger_interval: str
    progress_interval: float
    broker_heap: str
    partitions: int
    embedded_s3: bool = False  # --storage s3
    warehouse: str | None = None  # default: <state_dir>/warehouse
    checkpoint_root: str | None = None  # default: <state_dir>/checkpoints
    s3: S3Settings = dataclasses.field(default_factory=S3Settings)
    metrics: MetricsSettings = dataclasses.field(default_factory=MetricsSettings)
    lineage: LineageSettings = dataclasses.field(default_factory=LineageSettings)
    windows_png: Path | None = None  # --windows-png: the picture of the alert windows
    fuse: bool = True  # --fuse: enrich and detect as one query (stages.enrich_detect)
    count_trigger_interval: str | None = None  # --count-trigger-interval (default: the same)
    spark_master: str = DEFAULT_SPARK_MASTER  # --spark-master

    @property
    def storage(self) -> StorageSettings:
        return StorageSettings(
            warehouse=self.warehouse or str(self.state_dir / "warehouse"), s3=self.s3
        )

    @property
    def checkpoints(self) -> str:
        return self.checkpoint_root or str(self.state_dir / "checkpoints")

    def stream(self, stage: str) -> StreamSettings:
        interval = self.trigger_interval
        if stage == count.STAGE and self.count_trigger_interval is not None:
            interval = self.count_trigger_interval
        return StreamSettings(
            checkpoint_location=f"{self.checkpoints.rstrip('/')}/{stage}",
            trigger="processingTime",
            trigger_interval=interval,
        )

    @property
    def s3_if_used(self) -> S3Settings | None:
        return s3_if_used(self.s3, self.storage.warehouse, self.checkpoints)


def wipe_state(state_dir: Path) -> None:
    """Removes what a run keeps under `state_dir`, and nothing else that may be there."""
    for name in STATE_FOLDERS:
        shutil.rmtree(state_dir / name, ignore_errors=True)


class _GeneratorThread(threading.Thread):
    """Runs the generator; keeps its report or its failure for the main thread."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Topics,
        settings: GeneratorSettings,
        cars: list[int],
        pipeline: str,
    ) -> None:
        super().__init__(name="carstream-generate", daemon=True)
        self.kafka, self.topics, self.settings, self.cars = kafka, topics, settings, cars
        self.metrics = GeneratorMetrics(pipeline)
        self.stop_event = threading.Event()
        self.report: generate.GeneratorReport | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.report = generate.run(
                self.kafka,
                self.topics,
                self.settings,
                self.cars,
                stop=self.stop_event,
                metrics=self.metrics,
            )
        except BaseException as error:
            self.error = error

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def _say(message: str) -> None:
    """What the run is doing: on stdout, or as a log line with --log-format json."""
    _print(f"carstream run: {message}", message)


def _print(line: str, message: str | None = None) -> None:
    if logs.is_json():
        logger.info(message or line)
    else:
        print(line, flush=True)


def run_pipeline(
    run: RunSettings,
    kafka: KafkaSettings,
    topics: Topics,
    dims_settings: DimsSettings,
    generator: GeneratorSettings,
    detect_settings: DetectSettings,
    count_settings: CountSettings,
    signals: StopSignals,
) -> None:
    """Runs everything until `run.duration` passes or a stop signal arrives; raises
    PipelineFailed when a part fails. Whatever was started is stopped before this returns."""
    stop: threading.Event = signals
    if run.fresh:
        wipe_state(run.state_dir)
        _say(f"wiped {', '.join(STATE_FOLDERS)} under {run.state_dir}")
    run.state_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup:
        if run.embedded_s3:
            run = _start_s3_server(run, cleanup)
        _prepare_storage(run)
        _check_enrich_detect_mode(run)
        broker: embedded.EmbeddedBroker | None = None
        if not kafka.bootstrap_servers:
            started = time.monotonic()
            broker = embedded.EmbeddedBroker(run.state_dir / "kafka", heap=run.broker_heap)
            _say("starting the embedded Kafka broker")
            broker.start()
            cleanup.callback(_stop_broker, broker)
            kafka = dataclasses.replace(kafka, bootstrap_servers=broker.bootstrap_servers)
            _say(
                f"Kafka broker ready at {broker.bootstrap_servers} in "
                f"{time.monotonic() - started:.1f} s (log: {broker.log_file})"
            )
        admin = TopicAdmin(kafka)
        cleanup.callback(admin.close)
        created = admin.create_topics(topics.all(), partitions=run.partitions)
        _say(f"topics: {', '.join(topics.all())} ({len(created)} created)")
        if stop.is_set():
            return

        started = time.monotonic()
        _say("starting Spark (local)")
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # all of it runs on this machine
        spark = spark_io.spark_session(
            "carstream-run",
            master=run.spark_master,
            shuffle_partitions=2,
            s3=run.s3_if_used,
            extra_conf=run.lineage.local_spark_conf(),
        )
        cleanup.callback(_stop_spark, spark)
        signals.install()  # the SparkContext replaced the SIGINT handler with its own
        _say(f"Spark ready in {time.monotonic() - started:.1f} s")
        if stop.is_set():
            return

        written = dims.run(spark, dims_settings, run.storage)
        _say(
            f"dimensions written under {run.storage.warehouse}/dims "
            f"({', '.join(f'{table}: {rows} rows' for table, rows in written.items())}, "
            f"seed {dims_settings.seed})"
        )
        cars = generate.read_car_ids(run.storage)
        if stop.is_set():
            return

        chart = _windows_chart(run, count_settings, cleanup)
        queries: list[StreamingQuery] = []
        cleanup.callback(_stop_queries, queries)
        job = StreamJob(
            kafka=kafka,
            topics=topics,
            stream=run.stream("enrich"),
            lineage=run.lineage,
            metrics=run.metrics,
        )
        observe_queries(spark, job, run.storage)
        if run.metrics.port is not None:
            _say(f"metrics at http://{run.metrics.address}:{run.metrics.port}/metrics")
        if run.fuse:
            job = dataclasses.replace(job, stream=run.stream(enrich_detect.STAGE))
            queries += enrich_detect.start(spark, job, run.storage, detect_settings)
        else:
            queries += enrich.start(spark, job, run.storage)
            job = dataclasses.replace(job, stream=run.stream("detect"))
            queries += detect.start(spark, job, detect_settings)
        job = dataclasses.replace(job, stream=run.stream("count"))
        queries += count.start(
            spark, job, count_settings, console=sys.stdout, on_windows=chart.add if chart else None
        )
        _say(
            f"streams started: {', '.join(q.name for q in queries)} "
            f"(trigger every {run.trigger_interval}"
            + (f", count every {run.count_trigger_interval}" if run.count_trigger_interval else "")
            + f"; checkpoints under {run.checkpoints})"
        )

        generator_thread = _GeneratorThread(kafka, topics, generator, cars, run.metrics.pipeline)
        generator_thread.start()
        cleanup.callback(generator_thread.stop)
        _say(f"generator sending {generator.rate:g} events/s for {len(cars)} cars")
        _watch(run, admin, topics, queries, generator_thread, broker, stop)


def _windows_chart(
    run: RunSettings, settings: CountSettings, cleanup: ExitStack
) -> WindowChartWriter | None:
    """The picture of --windows-png, drawn as windows change and a last time once the
    streams have stopped (`cleanup` closes it after stopping the queries)."""
    if run.windows_png is None:
        return None
    chart = WindowChartWriter(run.windows_png, families=list(settings.color_families))
    cleanup.callback(_close_chart, chart)
    return chart


def _close_chart(chart: WindowChartWriter) -> None:
    chart.close()
    _say(f"alert windows drawn in {chart.path} ({len(chart.counts)} windows)")


def _start_s3_server(run: RunSettings, cleanup: ExitStack) -> RunSettings:
    """Starts the S3 server of --storage s3 (stopped by `cleanup`); its root credentials
    become this process's AWS environment, where Spark's JVM and boto3 find them."""
    started = time.monotonic()
    server = S3Server(run.state_dir / "s3")
    _say("starting the S3 server (versitygw)")
    server.start()
    cleanup.callback(_stop_s3_server, server)
    os.environ.update(server.credentials())
    _say(
        f"S3 server ready at {server.endpoint} in {time.monotonic() - started:.1f} s "
        f"(files under {server.data_dir}, log: {server.log_file})"
    )
    return dataclasses.replace(
        run,
        warehouse=f"s3a://{S3_BUCKET}/warehouse",
        checkpoint_root=f"s3a://{S3_BUCKET}/checkpoints",
        s3=server.settings,
    )


def _stop_s3_server(server: S3Server) -> None:
    _say("stopping the S3 server")
    server.stop()


def _check_enrich_detect_mode(run: RunSettings) -> None:
    """Refuses to switch between fused and separate enrich and detect on the same checkpoints:
    the other mode's queries have checkpoints of their own and would read every event again."""
    present = {checkpoint.stage for checkpoint in storage.checkpoints(run.checkpoints, run.s3)}
    mine = {enrich_detect.STAGE} if run.fuse else {enrich.STAGE, detect.STAGE}
    others = {enrich_detect.STAGE, enrich.STAGE, detect.STAGE} - mine
    if present & others and not present & mine:
        flag, other = ("--fuse", "--no-fuse") if run.fuse else ("--no-fuse", "--fuse")
        raise PipelineFailed(
            f"the checkpoints under {run.checkpoints} are of a run with {other} "
            f"({', '.join(sorted(present & others))}): run with {other} again, or with "
            f"--fresh to start over ({flag} on these checkpoints would read every event again)"
        )


def _prepare_storage(run: RunSettings) -> None:
    """Checks that the warehouse and checkpoint root are writable (creating the bucket of the
    run's own S3 server); with --fresh, empties those that are not under --state-dir."""
    for url in dict.fromkeys((run.storage.warehouse, run.checkpoints)):
        location = storage.Location.parse(url)
        if run.fresh and not run.embedded_s3 and location.bucket is not None:
            deleted = storage.delete_tree(url, run.s3)
            _say(f"wiped {url} ({deleted} objects)")
        if location.bucket is not None:
            store = storage.store_for(location, run.s3)
            _say(store.check(location, create_bucket=run.embedded_s3))


def _watch(
    run: RunSettings,
    admin: TopicAdmin,
    topics: Topics,
    queries: Sequence[StreamingQuery],
    generator_thread: _GeneratorThread,
    broker: embedded.EmbeddedBroker | None,
    stop: threading.Event,
) -> None:
    """Prints progress every `run.progress_interval` seconds until the duration is over or a
    stop is requested; raises PipelineFailed as soon as a part has failed."""
    progress = TopicProgress(admin, topics)
    progress.sample()
    started = time.monotonic()
    deadline = started + (run.duration if run.duration is not None else math.inf)
    next_report = started + run.progress_interval
    while not stop.is_set():
        now = time.monotonic()
        if now >= deadline:
            _say(f"{run.duration:g} s are over: stopping")
            break
        for query in queries:
            error = query.exception()
            if error is not None:
                raise PipelineFailed(f"query {query.name} failed: {error}")
        if generator_thread.error is not None:
            raise PipelineFailed(f"the generator failed: {generator_thread.error}")
        if broker is not None and not broker.is_running():
            raise PipelineFailed(f"the Kafka broker stopped on its own (log: {broker.log_file})")
        if now >= next_report:
            _print(progress.sample().describe(now - started))
            next_report += run.progress_interval
        stop.wait(min(1.0, max(0.05, min(next_report, deadline) - time.monotonic())))
    else:
        _say("stop requested: stopping")
    generator_thread.stop()
    if generator_thread.report is not None:
        report = generator_thread.report
        _say(f"generator sent {report.sent:,} events ({report.failed} not delivered)")
    _print(progress.sample().describe(time.monotonic() - started))


def _stop_queries(queries: Sequence[StreamingQuery]) -> None:
    """Stops each query between two micro-batches when it gets there within a few seconds:
    stopping one mid-batch works too (the checkpoint replays that batch) but fills the
    console with the cancelled tasks' errors."""
    deadline = time.monotonic() + QUERY_STOP_GRACE_SECONDS
    for query in queries:
        while query.isActive and query.status["isTriggerActive"]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        query.stop()


def _stop_spark(spark: SparkSession) -> None:
    """Stops the session and waits for Spark's JVM to exit, which it does on its own only
    some time after this process has gone (when it sees its stdin close)."""
    from pyspark import SparkContext

    spark.stop()
    gateway = SparkContext._gateway
    jvm_process = getattr(gateway, "proc", None)
    if gateway is None or jvm_process is None:
        return
    gateway.shutdown()
    if jvm_process.stdin is not None:
        jvm_process.stdin.close()
    try:
        jvm_process.wait(SPARK_EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        jvm_process.kill()
        jvm_process.wait()
    SparkContext._gateway = None
    SparkContext._jvm = None


def _stop_broker(broker: embedded.EmbeddedBroker) -> None:
    _say("stopping the Kafka broker")
    broker.stop()


# ---------------------------------------------------------------------------------------------
# `carstream run`


def _seconds(text: str) -> float:
    """A duration: plain seconds (`90`) or an interval (`90 seconds`, `2 minutes`)."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = interval_seconds(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than zero")
    return value


def add_cli(commands: Any) -> None:
    """Adds `run` to the `carstream` sub-commands."""
    parser = commands.add_parser(
        "run",
        help="run the whole pipeline locally (broker, dims, generator, streams) until Ctrl+C",
        description=(__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # The generator's --num-cars and --seed give way to those of the dimensions: the
        # generator uses every car of the dimension.
        conflict_handler="resolve",
    )
    KafkaSettings.add_arguments(
        parser,
        bootstrap_default=None,
        bootstrap_help="use this Kafka (host:port[,host:port]) instead of starting the "
        "embedded broker",
    )
    Topics.add_arguments(parser)
    GeneratorSettings.add_arguments(parser)
    DimsSettings.add_arguments(parser)
    DetectSettings.add_arguments(parser)
    CountSettings.add_arguments(parser)
    MetricsSettings.add_arguments(parser, address="127.0.0.1")
    LineageSettings.add_arguments(parser)
    group = parser.add_argument_group("run")
    group.add_argument(
        "--windows-png",
        type=Path,
        help="draw the alert windows (counts per window by colour family, maximum speed) in "
        "this PNG, kept current while running",
    )
    group.add_argument(
        "--storage",
        choices=("local", "s3"),
        default="local",
        help="local: warehouse and checkpoints in folders under --state-dir; s3: in a bucket "
        "of an S3 server that the run starts (default: local)",
    )
    group.add_argument(
        "--warehouse",
        help="the dimensions' folder or s3a:// URL (default: <state-dir>/warehouse)",
    )
    group.add_argument(
        "--checkpoint-root",
        help="folder or s3a:// URL of the checkpoints, <root>/<stage> "
        "(default: <state-dir>/checkpoints)",
    )
    S3Settings.add_arguments(parser)
    group.add_argument(
        "--fuse",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run enrich and detect as one query that parses each event once and writes "
        "samples-enriched and alert-data from the same rows (default); --no-fuse: as two "
        "queries, detect reading samples-enriched",
    )
    group.add_argument(
        "--duration",
        type=_seconds,
        help="stop after this many seconds of running pipeline, e.g. 90 or '2 minutes' "
        "(default: until Ctrl+C)",
    )
    group.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get(f"{ENV_PREFIX}STATE_DIR", LOCAL_STATE_DIR)),
        help=f"where the dimensions, checkpoints and the broker's data live (default: "
        f"{LOCAL_STATE_DIR}); env {ENV_PREFIX}STATE_DIR",
    )
    group.add_argument(
        "--fresh",
        action="store_true",
        help="delete the warehouse, checkpoints and broker data under --state-dir first",
    )
    group.add_argument(
        "--trigger-interval",
        type=interval_arg,
        default="5 seconds",
        help="micro-batch interval of the streams (default: 5 seconds)",
    )
    group.add_argument(
        "--count-trigger-interval",
        type=interval_arg,
        help="micro-batch interval of the counter alone (default: --trigger-interval): its "
        "windows change by the minute and each of its micro-batches costs a state-store "
        "version, so a longer one saves CPU while enrich-detect keeps alerts fast",
    )
    group.add_argument(
        "--spark-master",
        default=DEFAULT_SPARK_MASTER,
        help=f"the local Spark session's master, local[N] for N task slots (default: "
        f"{DEFAULT_SPARK_MASTER}, one per core)",
    )
    group.add_argument(
        "--progress-interval",
        type=_seconds,
        default=5.0,
        help="seconds between progress lines (default: 5)",
    )
    group.add_argument(
        "--partitions",
        type=positive_int_arg,
        default=2,
        help="partitions of each topic the run creates (default: 2)",
    )
    group.add_argument(
        "--broker-heap",
        type=embedded.heap_size,
        default=embedded.DEFAULT_HEAP,
        help=f"maximum heap of the embedded broker (default: {embedded.DEFAULT_HEAP})",
    )
    parser.set_defaults(handler=lambda args: main(args, parser))


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    count_settings = CountSettings.from_args(args)
    try:
        count.check_settings(count_settings)
    except StageUsageError as error:
        parser.error(str(error))
    if args.storage == "s3" and (args.warehouse or args.checkpoint_root or args.s3_endpoint):
        parser.error(
            "--storage s3 starts its own S3 server and bucket: leave out --warehouse, "
            "--checkpoint-root and --s3-endpoint (or leave out --storage s3 to use them)"
        )
    run = RunSettings(
        state_dir=args.state_dir,
        fresh=args.fresh,
        duration=args.duration,
        trigger_interval=args.trigger_interval,
        progress_interval=args.progress_interval,
        broker_heap=args.broker_heap,
        partitions=args.partitions,
        embedded_s3=args.storage == "s3",
        warehouse=args.warehouse,
        checkpoint_root=args.checkpoint_root,
        s3=S3Settings.from_args(args),
        metrics=MetricsSettings.from_args(args),
        lineage=LineageSettings.from_args(args),
        windows_png=args.windows_png,
        fuse=args.fuse,
        count_trigger_interval=args.count_trigger_interval,
        spark_master=args.spark_master,
    )
    generator = GeneratorSettings(
        rate=args.rate, time_limit=args.time_limit, max_events=args.max_events
    )
    logging.getLogger("carstream.kafka").setLevel(logging.ERROR)
    with stop_requested_on_signals() as signals:
        try:
            run_pipeline(
                run,
                KafkaSettings.from_args(args),
                Topics.from_args(args),
                DimsSettings.from_args(args),
                generator,
                DetectSettings.from_args(args),
                count_settings,
                signals,
            )
        except (
            PipelineFailed,
            embedded.BrokerError,
            S3ServerError,
            storage.StorageError,
            toolchain.ToolchainMissing,
        ) as error:
            print(f"carstream run: {error}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:  # a second Ctrl+C while stopping: what was started is gone
            print("carstream run: interrupted while stopping", file=sys.stderr)
            return EXIT_INTERRUPTED
    _say("stopped")
    return 0
