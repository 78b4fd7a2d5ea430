"""`carstream broker`: the embedded KRaft broker (carstream.broker) as a command.

Locally it is the broker of `make run`; in a cluster (the chart's standalone Kafka mode) it
runs with `--sasl-scram`, listens on all addresses, advertises the pod's DNS name and logs to
stderr. See `carstream broker --help`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from carstream import toolchain
from carstream.broker import (
    DEFAULT_HEAP,
    DEFAULT_PORT,
    BrokerError,
    EmbeddedBroker,
    heap_size,
    port_is_free,
)
from carstream.broker_security import Address, BrokerSecurity, ExternalListener, SecurityError
from carstream.shutdown import stop_requested_on_signals


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} must be within 0..65535 (0: a free port)")
    return value


def _override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value


def _address(text: str) -> Address:
    try:
        return Address.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


JARS_ENV = "CARSTREAM_BROKER_JARS"


def add_cli(commands: Any) -> None:
    """Adds `broker` to the `carstream` sub-commands."""
    parser = commands.add_parser(
        "broker",
        help="run a single-node Kafka broker (KRaft) until Ctrl+C or SIGTERM",
        description="Start a real single-node Apache Kafka broker (KRaft, broker and "
        "controller in one JVM) from the kafka-broker jars, print its bootstrap address on "
        "stdout once it accepts clients, and run until Ctrl+C or SIGTERM, then shut it down "
        "cleanly. With --sasl-scram it is a broker to share: clients log in with "
        "SCRAM-SHA-512 and ACLs apply (the admin identity, the only super user, comes from "
        "CARSTREAM_KAFKA_USERNAME and CARSTREAM_KAFKA_PASSWORD).",
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
        help="KRaft controller port, on loopback when --host is 0.0.0.0 (default: 0, a free one)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the client listeners bind to (default: 127.0.0.1; 0.0.0.0: all)",
    )
    parser.add_argument(
        "--advertised-host",
        help="host name clients are told to connect to (default: --host)",
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
    parser.add_argument(
        "--sasl-scram",
        action="store_true",
        help="SASL_PLAINTEXT listeners with SCRAM-SHA-512 logins, ACLs (StandardAuthorizer), "
        "the admin from CARSTREAM_KAFKA_USERNAME / CARSTREAM_KAFKA_PASSWORD as super user",
    )
    parser.add_argument(
        "--external-port",
        type=_port,
        help="a second client listener on this port, for clients outside a cluster "
        "(needs --sasl-scram and --external-advertised)",
    )
    parser.add_argument(
        "--external-advertised",
        type=_address,
        metavar="HOST:PORT",
        help="what clients of the external listener connect to, e.g. localhost:30093",
    )
    parser.add_argument(
        "--jars-dir",
        type=Path,
        default=os.environ.get(JARS_ENV) or None,
        help=f"folder of the kafka-broker jars (default: the toolchain cache's; env {JARS_ENV})",
    )
    parser.add_argument(
        "--override",
        type=_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a server.properties setting, e.g. auto.create.topics.enable=false; repeat",
    )
    parser.add_argument(
        "--console-log",
        action="store_true",
        help="the broker's log to stderr instead of <data-dir>/broker.log (for containers)",
    )
    parser.set_defaults(handler=lambda args: main(args, parser))


def _broker_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> EmbeddedBroker:
    """The broker the options describe; usage errors exit 2."""
    security = None
    if args.sasl_scram:
        try:
            security = BrokerSecurity.from_environment()
        except SecurityError as error:
            parser.error(f"--sasl-scram: {error}")
    external = None
    if args.external_port is not None or args.external_advertised is not None:
        if args.external_port is None or args.external_advertised is None:
            parser.error("--external-port and --external-advertised go together")
        if security is None:
            parser.error("an external listener needs --sasl-scram")
        external = ExternalListener(args.external_port, args.external_advertised)
    return EmbeddedBroker(
        args.data_dir,
        port=args.port,
        controller_port=args.controller_port,
        host=args.host,
        advertised_host=args.advertised_host,
        heap=args.heap,
        properties=dict(args.override),
        security=security,
        external=external,
        jars_dir=args.jars_dir,
        console_log=args.console_log,
    )


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    broker = _broker_from_args(args, parser)
    probe_host = broker.local_host
    ports = [("--port", args.port), ("--controller-port", args.controller_port)]
    if args.external_port:
        ports.append(("--external-port", args.external_port))
    for name, port in ports:
        if port and not port_is_free(probe_host, port):
            print(
                f"carstream broker: {name} {port} is in use on {probe_host}; "
                "pass 0 for a free port",
                file=sys.stderr,
            )
            return 1
    with stop_requested_on_signals() as signals:
        started = time.monotonic()
        try:
            broker.start()
        except (BrokerError, toolchain.ToolchainMissing) as error:
            print(f"carstream broker: {error}", file=sys.stderr)
            return 1
        try:
            where = "stderr" if broker.console_log else broker.log_file
            print(
                f"carstream broker: ready in {time.monotonic() - started:.1f} s "
                f"(log: {where}); Ctrl+C stops it",
                file=sys.stderr,
            )
            print(broker.bootstrap_servers, flush=True)
            while not signals.wait(0.5):
                if not broker.is_running():
                    print(
                        f"carstream broker: the broker stopped on its own; {broker.log_excerpt()}",
                        file=sys.stderr,
                    )
                    return 1
            print("carstream broker: stopping", file=sys.stderr)
        except KeyboardInterrupt:  # a second Ctrl+C: the broker is killed if it does not stop
            return 130
        finally:
            broker.stop()
    return 0
