"""OpenLineage: which Kafka topics and Parquet tables each stage reads and writes.

OpenLineage's Spark listener (`io.openlineage:openlineage-spark_2.13`, the toolchain jar group
`openlineage`, see build/pom.xml) walks the plan of every Spark job, batch or micro-batch,
and emits run events whose `inputs` and `outputs` name the datasets: a Kafka topic as
namespace `kafka://host:port` (a bootstrap server), name the topic; a local Parquet table as
namespace `file`, name its absolute path (object stores get their own scheme as namespace).

`LineageSettings` is the stage flags `--lineage {off,console,file,http}`, `--lineage-file`,
`--lineage-url`, `--lineage-namespace` (and their CARSTREAM_LINEAGE_* variables);
`spark_conf()` turns them into the listener's Spark configuration (`spark.extraListeners`,
`spark.openlineage.*`), which is also what a SparkApplication's `sparkConf` would carry (with
the jar in the image's Spark jars folder); `local_spark_conf()` adds the jar from the toolchain
cache for a local session. Under spark-submit the session's own configuration rules and the
flags do not reach it (spark_io.spark_session ignores extra configuration there).

What the listener cannot name: the output topics of a Kafka sink that takes each row's topic
from its `topic` column (every carstream stage writes its output and the dead-letter topic
that way). OpenLineage 1.53's Kafka write support reads only the sink's `topic` option
(WriteToDataSourceV2Visitor: "Both topic and bootstrapServers need to be present in order to
construct an output dataset"), so those events have inputs and no outputs. carstream fills
the gap with events of its own, one job per streaming query (`<namespace>` / `carstream.<query>`,
START when the query starts, COMPLETE or FAIL when it ends), naming what the query reads and
writes (StageLineage, through the same transport; producer PRODUCER).

`read_events` and `datasets` read back what the file transport wrote (one JSON event a line).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from carstream import toolchain
from carstream.config import StorageSettings, Topics, add_option, is_s3
from carstream.stages import StageUsageError

Transport = Literal["off", "console", "file", "http"]
TRANSPORTS: tuple[Transport, ...] = ("off", "console", "file", "http")

LISTENER = "io.openlineage.spark.agent.OpenLineageSparkListener"
JAR_GROUP = "openlineage"
DEFAULT_NAMESPACE = "carstream"  # the pipeline's name
DEFAULT_HTTP_ENDPOINT = "/api/v1/lineage"
PRODUCER = "urn:carstream:stage-lineage"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
logger = logging.getLogger("carstream.lineage")

# What each streaming query reads and writes (roles of config.Topics), as the chart's ACLs
# (carstream.stageTopics) grant them.
QUERY_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "enrich": (("sensors",), ("enriched", "dlq")),
    "detect": (("enriched",), ("alerts", "dlq")),
    "enrich-detect": (("sensors",), ("enriched", "alerts", "dlq")),
    "count": (("alerts",), ("counts",)),
    "count-dead-letters": (("alerts",), ("dlq",)),
}
_DIMENSIONS = ("car_models", "car_colors", "cars")
QUERY_TABLES: dict[str, tuple[str, ...]] = {"enrich": _DIMENSIONS, "enrich-detect": _DIMENSIONS}

DatasetId = tuple[str, str]
"""(namespace, name) of a dataset, as OpenLineage names it."""


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL: use e.g. http://marquez:5000 or "
            "http://marquez:5000/api/v1/lineage"
        )
    return text


@dataclass(frozen=True)
class LineageSettings:
    """Where the stage's OpenLineage events go: nowhere (`off`), the driver's log (`console`),
    a file of one JSON event per line (`file`) or an OpenLineage HTTP endpoint (`http`)."""

    transport: Transport = "off"
    file: str | None = None
    url: str | None = None
    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if self.transport == "file" and not self.file:
            raise StageUsageError("--lineage file needs --lineage-file PATH (where events go)")
        if self.transport == "http" and not self.url:
            raise StageUsageError("--lineage http needs --lineage-url URL (the lineage server)")
        if not self.namespace:
            raise StageUsageError("--lineage-namespace must not be empty")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("lineage (OpenLineage)")
        add_option(
            group,
            "--lineage",
            default="off",
            choices=TRANSPORTS,
            help="emit OpenLineage events naming the topics and tables the stage reads and "
            "writes: to the driver's log (console), a file (file) or a server (http)",
        )
        add_option(
            group,
            "--lineage-file",
            help="with --lineage file: the file the events are appended to, one JSON a line",
        )
        add_option(
            group,
            "--lineage-url",
            type=_http_url,
            help="with --lineage http: the OpenLineage server, http(s)://host:port[/path] "
            f"(path default {DEFAULT_HTTP_ENDPOINT})",
        )
        add_option(
            group,
            "--lineage-namespace",
            default=DEFAULT_NAMESPACE,
            help="the OpenLineage namespace of the stage's jobs (the pipeline's name)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LineageSettings:
        """Raises StageUsageError when the transport lacks its file or URL."""
        file = args.lineage_file
        return cls(
            transport=cast(Transport, args.lineage),
            file=os.path.abspath(file) if file else None,
            url=args.lineage_url,
            namespace=args.lineage_namespace,
        )

    @property
    def enabled(self) -> bool:
        return self.transport != "off"

    def spark_conf(self) -> dict[str, str]:
        """The Spark configuration that turns the listener on (empty when off)."""
        if not self.enabled:
            return {}
        conf = {
            "spark.extraListeners": LISTENER,
            "spark.openlineage.namespace": self.namespace,
            "spark.openlineage.transport.type": self.transport,
        }
        if self.transport == "file":
            assert self.file is not None
            conf["spark.openlineage.transport.location"] = self.file
        elif self.transport == "http":
            assert self.url is not None
            parts = urlsplit(self.url)
            conf["spark.openlineage.transport.url"] = f"{parts.scheme}://{parts.netloc}"
            conf["spark.openlineage.transport.endpoint"] = (
                parts.path.rstrip("/") or DEFAULT_HTTP_ENDPOINT
            )
        return conf

    def local_spark_conf(self) -> dict[str, str]:
        """`spark_conf()` plus the listener's jar (the toolchain group `openlineage`) on the
        driver's class path, for a local session (`spark_io.spark_session(extra_conf=...)`).

        Not spark.jars: Spark loads those in a child class loader, which the listener's
        extension lookup then reports, at every plan, as "an illegal reflective access
        operation" (a warning and a stack trace, no effect on the events). On the class path
        of the one JVM of local mode, the listener is loaded like a jar of Spark's own jars
        folder, as OpenLineage asks. Raises toolchain.ToolchainMissing when
        `build/bootstrap jars` has not resolved the group."""
        if not self.enabled:
            return {}
        jars = os.pathsep.join(str(jar) for jar in toolchain.jars(JAR_GROUP))
        return {**self.spark_conf(), "spark.driver.extraClassPath": jars}


# ---------------------------------------------------------------------------------------------
# Reading events back


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The events the file transport wrote to `path`, oldest first (none if no file yet)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _ids(entries: Iterable[Mapping[str, Any]] | None) -> set[DatasetId]:
    return {(str(entry["namespace"]), str(entry["name"])) for entry in entries or ()}


def datasets(
    events: Iterable[Mapping[str, Any]], job_prefix: str | None = None
) -> tuple[set[DatasetId], set[DatasetId]]:
    """(inputs, outputs): every dataset the events name, as (namespace, name); only the
    events of jobs whose name starts with `job_prefix` when it is given."""
    inputs: set[DatasetId] = set()
    outputs: set[DatasetId] = set()
    for event in events:
        job = str((event.get("job") or {}).get("name", ""))
        if job_prefix is not None and not job.startswith(job_prefix):
            continue
        inputs |= _ids(event.get("inputs"))
        outputs |= _ids(event.get("outputs"))
    return inputs, outputs


# ---------------------------------------------------------------------------------------------
# carstream's own events: what each streaming query reads and writes


def kafka_dataset(bootstrap_servers: str, topic: str) -> DatasetId:
    """A topic as OpenLineage names it: namespace kafka://<first bootstrap server>."""
    return (f"kafka://{bootstrap_servers.split(',')[0].strip()}", topic)


def storage_dataset(location: str) -> DatasetId:
    """A folder or s3a:// table as OpenLineage names it: (file, path) or (s3://bucket, key)."""
    if is_s3(location):
        bucket, _, key = location.split("://", 1)[1].partition("/")
        return (f"s3://{bucket}", key.rstrip("/"))
    return ("file", os.path.abspath(location))


def query_datasets(
    query: str, bootstrap_servers: str, topics: Topics, storage: StorageSettings | None
) -> tuple[list[DatasetId], list[DatasetId]]:
    """(inputs, outputs) of a streaming query of the pipeline (QUERY_TOPICS, QUERY_TABLES)."""
    reads, writes = QUERY_TOPICS.get(query, ((), ()))
    inputs = [kafka_dataset(bootstrap_servers, getattr(topics, role)) for role in reads]
    if storage is not None:
        inputs += [storage_dataset(storage.dim_path(t)) for t in QUERY_TABLES.get(query, ())]
    outputs = [kafka_dataset(bootstrap_servers, getattr(topics, role)) for role in writes]
    return inputs, outputs


class StageLineage:
    """Sends carstream's run events through the settings' transport: appended to the file,
    logged (console) or POSTed (http). A failure to send is logged, never raised."""

    def __init__(self, settings: LineageSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()

    def event(
        self,
        event_type: str,
        job: str,
        run_id: str,
        inputs: Iterable[DatasetId] = (),
        outputs: Iterable[DatasetId] = (),
    ) -> dict[str, Any]:
        return {
            "eventType": event_type,
            "eventTime": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "producer": PRODUCER,
            "schemaURL": SCHEMA_URL,
            "run": {"runId": run_id},
            "job": {"namespace": self.settings.namespace, "name": job},
            "inputs": [{"namespace": ns, "name": name} for ns, name in inputs],
            "outputs": [{"namespace": ns, "name": name} for ns, name in outputs],
        }

    def send(self, event: Mapping[str, Any]) -> None:
        if not self.settings.enabled:
            return
        line = json.dumps(event, separators=(",", ":"))
        try:
            if self.settings.transport == "file":
                assert self.settings.file is not None
                with self._lock, open(self.settings.file, "a", encoding="utf-8") as file:
                    file.write(line + "\n")
            elif self.settings.transport == "http":
                conf = self.settings.spark_conf()
                url = conf["spark.openlineage.transport.url"]
                url += conf["spark.openlineage.transport.endpoint"]
                request = urllib.request.Request(
                    url, line.encode(), {"Content-Type": "application/json"}, method="POST"
                )
                with urllib.request.urlopen(request, timeout=10):
                    pass
            else:
                logger.info("OpenLineage event: %s", line)
        except OSError as error:
            logger.warning("could not send a lineage event of %s: %s", event["job"], error)
