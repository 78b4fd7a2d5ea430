"""A real single-node Apache Kafka broker (KRaft: broker and controller in one JVM).

It runs from the jars that `build/bootstrap` resolved from Maven Central into the cache
(`toolchain.jars("kafka-broker")`): no Kafka installation, no container. `carstream broker`,
`carstream run` and the tests' broker fixture all use `EmbeddedBroker`.

The JVM lives in its own process group (Ctrl+C in a terminal reaches only Python, which stops
the broker after everything that uses it) and, on Linux, gets SIGKILL from the kernel when the
thread that started it dies, so a crashed or killed parent leaves no broker behind. Start it
from a thread that lives as long as the broker (the main thread, normally).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka.admin import AdminClient

from carstream import toolchain
from carstream.shutdown import stop_requested_on_signals

JAR_GROUP = "kafka-broker"
KAFKA_MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
DEFAULT_HEAP = "512m"
DEFAULT_PORT = 9092
NODE_ID = 1
_PR_SET_PDEATHSIG = 1
_HEAP = re.compile(r"^\d+[kmgKMG]?$")
_LOG_TAIL_LINES = 25

LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""

# Settings for one combined node; every internal topic has one replica.
BASE_PROPERTIES: Mapping[str, str] = {
    "process.roles": "broker,controller",
    "node.id": str(NODE_ID),
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "num.partitions": "2",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "2",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
}


class BrokerError(RuntimeError):
    """The broker could not be formatted or started, or stopped on its own."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on the port. Connections of a stopped broker that linger in
    TIME_WAIT do not count: Kafka binds with SO_REUSEADDR, so this probe does too."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID, URL-safe base64 without padding (like `random-uuid`)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # would read as an option on the StorageTool command line
            return text


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    if candidate is not None and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError("no java found (set JAVA_HOME or put java 17+ on PATH)")
    return found


def _death_signal_setter() -> Any:
    """A preexec function that asks the kernel to SIGKILL the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return die_with_parent


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedBroker:
    """A KRaft broker in a child JVM, as a context manager.

    `data_dir` holds server.properties, the log4j2 configuration, `broker.log` (all the JVM's
    output) and the Kafka data (`data_dir/kafka-data`). Without one, a temporary folder is
    used and removed on stop; with one, the data survives and is reused (formatted only the
    first time), so topics and offsets persist across runs. `port=0` picks a free port.
    `properties` add to or override the broker's server.properties.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int = 0,
        controller_port: int = 0,
        host: str = "127.0.0.1",
        heap: str = DEFAULT_HEAP,
        properties: Mapping[str, str] | None = None,
        start_timeout: float = 90.0,
        stop_timeout: float = 30.0,
    ) -> None:
        if not _HEAP.match(heap):
            raise ValueError(f"heap {heap!r} is not a JVM size such as 512m or 1g")
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        self._requested_port = port
        self._requested_controller_port = controller_port
        self.host = host
        self.heap = heap
        self.extra_properties = dict(properties or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.data_dir: Path | None = None
        self.port: int | None = None
        self.controller_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- addresses and files ---------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerError("the broker is not started")
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self._dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def _dir(self) -> Path:
        if self.data_dir is None:
            raise BrokerError("the broker is not started")
        return self.data_dir

    def server_properties(self) -> dict[str, str]:
        listener = f"PLAINTEXT://{self.host}:{self.port}"
        controller = f"{self.host}:{self.controller_port}"
        return {
            **BASE_PROPERTIES,
            # Static voters: the node's own controller address comes from this file at every
            # start, so a reused data folder works with other ports.
            "controller.quorum.voters": f"{NODE_ID}@{controller}",
            "listeners": f"{listener},CONTROLLER://{controller}",
            "advertised.listeners": listener,
            "log.dirs": str(self._dir / "kafka-data"),
            **self.extra_properties,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedBroker:
        """Formats storage if needed, starts the JVM and returns once clients are served."""
        if self._process is not None:
            raise BrokerError("the broker is already started")
        classpath = f"{toolchain.jar_dir(JAR_GROUP)}/*"
        toolchain.jars(JAR_GROUP)  # fails clearly when the bootstrap has not run
        java = java_executable()
        if self._given_data_dir is not None:
            self._given_data_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir = self._given_data_dir.resolve()
        else:
            self.data_dir = Path(tempfile.mkdtemp(prefix="carstream-kafka-"))
        auto_ports = self._requested_port == 0 or self._requested_controller_port == 0
        attempts = 3 if auto_ports else 1
        for attempt in range(1, attempts + 1):
            self.port = self._requested_port or free_port(self.host)
            self.controller_port = self._requested_controller_port or free_port(self.host)
            self._write_configuration()
            self._format_storage(java, classpath)
            try:
                self._launch(java, classpath)
                self._wait_until_ready()
            except BrokerError as error:
                port_taken = "Address already in use" in _tail(self.log_file, 200)
                self._terminate()
                if attempt < attempts and port_taken:
                    continue  # someone took an auto-picked port meanwhile
                self._remove_temporary_dir()
                raise error from None
            break
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stops the broker cleanly (SIGTERM), or kills it after `stop_timeout` seconds."""
        atexit.unregister(self.stop)
        self._terminate()
        self._remove_temporary_dir()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- steps -----------------------------------------------------------------------------

    def _write_configuration(self) -> None:
        lines = [f"{key}={value}" for key, value in self.server_properties().items()]
        (self._dir / "server.properties").write_text("\n".join(lines) + "\n")
        (self._dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)

    def _jvm_options(self, heap: str) -> list[str]:
        log_config = (self._dir / "log4j2.properties").as_uri()
        return [
            f"-Xmx{heap}",
            "-Xms64m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log_config}",
        ]

    def _format_storage(self, java: str, classpath: str) -> None:
        if (self._dir / "kafka-data" / "meta.properties").exists():
            return
        command = [
            java,
            *self._jvm_options("256m"),
            "-cp",
            classpath,
            STORAGE_TOOL_CLASS,
            "format",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(self._dir / "server.properties"),
        ]
        with self.log_file.open("ab") as log:
            result = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        if result.returncode != 0:
            raise BrokerError(
                f"formatting the broker's storage failed (exit {result.returncode}); "
                f"end of {self.log_file}:\n{_tail(self.log_file)}"
            )

    def _launch(self, java: str, classpath: str) -> None:
        command = [
            java,
            *self._jvm_options(self.heap),
            "-cp",
            classpath,
            KAFKA_MAIN_CLASS,
            str(self._dir / "server.properties"),
        ]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_death_signal_setter(),
            )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        assert self.port is not None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise BrokerError(
                    f"the broker exited during start-up; end of {self.log_file}:\n"
                    f"{_tail(self.log_file)}"
                )
            if self._serves_metadata():
                return
            time.sleep(0.2)
        raise BrokerError(
            f"the broker did not accept clients within {self.start_timeout:.0f} s; "
            f"end of {self.log_file}:\n{_tail(self.log_file)}"
        )

    def _serves_metadata(self) -> bool:
        assert self.port is not None
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                pass
        except OSError:
            return False
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        try:
            metadata = admin.list_topics(timeout=2)
        except Exception:  # KafkaException while the broker registers itself
            return False
        return NODE_ID in metadata.brokers

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def _remove_temporary_dir(self) -> None:
        if self._given_data_dir is None and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


# ---------------------------------------------------------------------------------------------
# `carstream broker`


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} must be within 0..65535 (0: a free port)")
    return value


def heap_size(text: str) -> str:
    """argparse type of a JVM heap size such as 512m or 1g."""
    if not _HEAP.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JVM size such as 512m or 1g")
    return text


def add_cli(commands: Any) -> None:
    """Adds `broker` to the `carstream` sub-commands."""
    parser = commands.add_parser(
        "broker",
        help="run a local single-node Kafka broker (KRaft) until Ctrl+C",
        description="Start a real single-node Apache Kafka broker (KRaft, broker and "
        "controller in one JVM) from the jars in the toolchain cache, print its bootstrap "
        "address on stdout once it accepts clients, and run until Ctrl+C or SIGTERM, then "
        "shut it down cleanly.",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"client port (default: {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--controller-port",
        type=_port,
        default=0,
        help="KRaft controller port (default: 0, a free one)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on and to advertise to clients (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the broker's data and log here across runs (default: a temporary folder, "
        "removed on exit)",
    )
    parser.add_argument(
        "--heap",
        type=heap_size,
        default=DEFAULT_HEAP,
        help=f"maximum JVM heap (default: {DEFAULT_HEAP})",
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    for name, port in (("--port", args.port), ("--controller-port", args.controller_port)):
        if port and not port_is_free(args.host, port):
            print(
                f"carstream broker: {name} {port} is in use on {args.host}; pass 0 for a free port",
                file=sys.stderr,
            )
            return 1
    broker = EmbeddedBroker(
        args.data_dir,
        port=args.port,
        controller_port=args.controller_port,
        host=args.host,
        heap=args.heap,
    )
    with stop_requested_on_signals() as signals:
        started = time.monotonic()
        try:
            broker.start()
        except (BrokerError, toolchain.ToolchainMissing) as error:
            print(f"carstream broker: {error}", file=sys.stderr)
            return 1
        try:
            print(
                f"carstream broker: ready in {time.monotonic() - started:.1f} s "
                f"(log: {broker.log_file}); Ctrl+C stops it",
                file=sys.stderr,
            )
            print(broker.bootstrap_servers, flush=True)
            while not signals.wait(0.5):
                if not broker.is_running():
                    print(
                        f"carstream broker: the broker stopped on its own; end of "
                        f"{broker.log_file}:\n{_tail(broker.log_file)}",
                        file=sys.stderr,
                    )
                    return 1
            print("carstream broker: stopping", file=sys.stderr)
        except KeyboardInterrupt:  # a second Ctrl+C: the broker is killed if it does not stop
            return 130
        finally:
            broker.stop()
    return 0
