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
from typing import IO, Any

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient

from carstream import broker_security, toolchain
from carstream.broker_security import Address, BrokerSecurity, ExternalListener

JAR_GROUP = "kafka-broker"
KAFKA_MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
DEFAULT_HEAP = "512m"
DEFAULT_PORT = 9092
NODE_ID = 1
_PR_SET_PDEATHSIG = 1
_HEAP = re.compile(r"^\d+[kmgKMG]?$")
_LOG_TAIL_LINES = 25
REFUSED_GRACE = 10.0
"""Seconds of refused admin logins after which a starting broker is given up."""

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

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})

# Settings for one combined node; every internal topic has one replica.
BASE_PROPERTIES: Mapping[str, str] = {
    "process.roles": "broker,controller",
    "node.id": str(NODE_ID),
    "controller.listener.names": "CONTROLLER",
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


def death_signal_setter() -> Any:
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


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL to its process group after `timeout` seconds; waits for it."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedBroker:
    """A KRaft broker in a child JVM, as a context manager.

    `data_dir` holds server.properties, the log4j2 configuration, `broker.log` (all the JVM's
    output, unless `console_log` sends it to this process's stderr) and the Kafka data
    (`data_dir/kafka-data`). Without one, a temporary folder is used and removed on stop; with
    one, the data survives and is reused (formatted only the first time), so topics and offsets
    persist across runs. `port=0` picks a free port. `host` is where the client listeners
    bind, `advertised_host` what clients are told to connect to (default: `host`).
    `properties` add to or override the broker's server.properties.

    With `security`, clients log in with SCRAM-SHA-512 and ACLs apply (see broker_security);
    `external` adds a second client listener for clients outside a cluster. `jars_dir` is the
    folder of the kafka-broker jars (default: the toolchain cache's).
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int = 0,
        controller_port: int = 0,
        host: str = "127.0.0.1",
        advertised_host: str | None = None,
        heap: str = DEFAULT_HEAP,
        properties: Mapping[str, str] | None = None,
        security: BrokerSecurity | None = None,
        external: ExternalListener | None = None,
        jars_dir: str | Path | None = None,
        console_log: bool = False,
        start_timeout: float = 90.0,
        stop_timeout: float = 30.0,
    ) -> None:
        if not _HEAP.match(heap):
            raise ValueError(f"heap {heap!r} is not a JVM size such as 512m or 1g")
        if external is not None and security is None:
            raise ValueError("an external listener needs security (SASL with SCRAM-SHA-512)")
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        self._requested_port = port
        self._requested_controller_port = controller_port
        self.host = host
        self.advertised_host = advertised_host or host
        self.heap = heap
        self.extra_properties = dict(properties or {})
        self.security = security
        self.external = external
        self.jars_dir = Path(jars_dir) if jars_dir is not None else toolchain.jar_dir(JAR_GROUP)
        self.console_log = console_log
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.data_dir: Path | None = None
        self.port: int | None = None
        self.controller_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- addresses and files ---------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """The address clients use (the advertised one)."""
        if self.port is None:
            raise BrokerError("the broker is not started")
        return f"{self.advertised_host}:{self.port}"

    @property
    def local_host(self) -> str:
        """An address of this machine where the listeners accept connections."""
        return "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host

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
        assert self.port is not None and self.controller_port is not None
        controller = Address(self.local_host, self.controller_port)
        properties = {
            **BASE_PROPERTIES,
            # Static voters: the node's own controller address comes from this file at every
            # start, so a reused data folder works with other ports.
            "controller.quorum.voters": f"{NODE_ID}@{controller}",
            "log.dirs": str(self._dir / "kafka-data"),
        }
        if self.security is None:
            properties.update(
                plaintext_listener_properties(
                    self.host, self.port, self.advertised_host, controller
                )
            )
        else:
            properties.update(
                broker_security.listener_properties(
                    self.security,
                    bind_host=self.host,
                    port=self.port,
                    advertised=Address(self.advertised_host, self.port),
                    controller=controller,
                    external=self.external,
                )
            )
        return {**properties, **self.extra_properties}

    def admin_config(self) -> dict[str, Any]:
        """librdkafka settings of a super-user client of this broker, on this machine."""
        address = f"{self.local_host}:{self.port}"
        if self.security is None:
            return {"bootstrap.servers": address}
        return self.security.client_settings(address).client_config()

    # -- lifecycle -------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedBroker:
        """Formats storage if needed, starts the JVM and returns once clients are served."""
        if self._process is not None:
            raise BrokerError("the broker is already started")
        toolchain.jar_files(  # fails clearly when the bootstrap has not run
            self.jars_dir, hint="run build/bootstrap, or point --jars-dir at the kafka-broker jars"
        )
        classpath = f"{self.jars_dir}/*"
        java = java_executable()
        if self._given_data_dir is not None:
            self._given_data_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir = self._given_data_dir.resolve()
        else:
            self.data_dir = Path(tempfile.mkdtemp(prefix="carstream-kafka-"))
        auto_ports = self._requested_port == 0 or self._requested_controller_port == 0
        attempts = 3 if auto_ports else 1
        for attempt in range(1, attempts + 1):
            self.port = self._requested_port or free_port(self.local_host)
            self.controller_port = self._requested_controller_port or free_port(self.local_host)
            self._write_configuration()
            self._format_storage(java, classpath)
            try:
                self._launch(java, classpath)
                self._wait_until_ready()
            except BrokerError as error:
                port_taken = "Address already in use" in log_tail(self.log_file, 200)
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
        # Owner-only: with security, the file holds the admin's password.
        _write_private(
            self._dir / "server.properties",
            broker_security.properties_text(self.server_properties()),
        )
        (self._dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)

    def _jvm_options(self, heap: str) -> list[str]:
        return jvm_options(heap, self._dir / "log4j2.properties")

    def _format_storage(self, java: str, classpath: str) -> None:
        if (self._dir / "kafka-data" / "meta.properties").exists():
            return
        arguments = [
            STORAGE_TOOL_CLASS,
            "format",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(self._dir / "server.properties"),
        ]
        if self.security is not None:
            arguments += ["--add-scram", self.security.format_argument()]
        # The tool's arguments go through a java @argfile, so that no credential is ever on a
        # command line (which every process of the machine may read).
        argfile = self._dir / "format.args"
        _write_private(argfile, "\n".join(f"'{argument}'" for argument in arguments) + "\n")
        command = [java, *self._jvm_options("256m"), "-cp", classpath, f"@{argfile}"]
        try:
            with self._output() as log:
                result = subprocess.run(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise BrokerError(
                f"formatting the broker's storage failed (exit {result.returncode}); "
                f"{self.log_excerpt()}"
            )

    def _output(self) -> IO[bytes]:
        """Where the JVMs write: broker.log, or this process's stderr with `console_log`."""
        if self.console_log:
            return os.fdopen(os.dup(sys.stderr.fileno()), "wb")
        return self.log_file.open("ab")

    def log_excerpt(self) -> str:
        """Where to read what the broker said: the end of its log, or a pointer to stderr."""
        if self.console_log:
            return "the broker's output is above"
        return f"end of {self.log_file}:\n{log_tail(self.log_file)}"

    def _launch(self, java: str, classpath: str) -> None:
        command = [
            java,
            *self._jvm_options(self.heap),
            "-cp",
            classpath,
            KAFKA_MAIN_CLASS,
            str(self._dir / "server.properties"),
        ]
        with self._output() as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=death_signal_setter(),
            )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        refused: list[str] = []
        refused_since: float | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise BrokerError(f"the broker exited during start-up; {self.log_excerpt()}")
            if self._serves_metadata(refused):
                return
            if refused and refused_since is None:
                refused_since = time.monotonic()
            if refused_since is not None and time.monotonic() - refused_since > REFUSED_GRACE:
                raise BrokerError(
                    f"the broker refuses the admin's login ({refused[-1]}): its storage was "
                    "formatted with another admin user or password; use those, or start with an "
                    "empty data folder"
                )
            time.sleep(0.2)
        raise BrokerError(
            f"the broker did not accept clients within {self.start_timeout:.0f} s; "
            f"{self.log_excerpt()}"
        )

    def _serves_metadata(self, refused: list[str]) -> bool:
        assert self.port is not None
        return answers_metadata(self.local_host, self.port, self.admin_config(), refused)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, self.stop_timeout)

    def _remove_temporary_dir(self) -> None:
        if self._given_data_dir is None and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


def jvm_options(heap: str, log_config: Path) -> list[str]:
    return [
        f"-Xmx{heap}",
        "-Xms64m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_config.as_uri()}",
    ]


def answers_metadata(host: str, port: int, config: dict[str, Any], refused: list[str]) -> bool:
    """True once the broker at host:port answers a metadata request as node NODE_ID;
    authentication errors go into `refused`."""
    try:
        with socket.create_connection((host, port), timeout=1):
            pass
    except OSError:
        return False

    def on_error(error: KafkaError) -> None:
        if error.code() == KafkaError._AUTHENTICATION:
            refused.append(error.str())

    with_callback: dict[str, Any] = {**config, "error_cb": on_error}
    admin = AdminClient(with_callback)
    try:
        metadata = admin.list_topics(timeout=2)
    except Exception:  # KafkaException while the broker registers itself
        admin.poll(0)  # serves the error callback
        return False
    return NODE_ID in metadata.brokers


def plaintext_listener_properties(
    host: str, port: int, advertised_host: str, controller: Address
) -> dict[str, str]:
    """The local broker's listeners: PLAINTEXT for clients, PLAINTEXT for the controller."""
    return {
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{advertised_host}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    }


def _write_private(path: Path, text: str) -> None:
    """Writes a file that only its owner may read."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)


def heap_size(text: str) -> str:
    """argparse type of a JVM heap size such as 512m or 1g."""
    if not _HEAP.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JVM size such as 512m or 1g")
    return text
