"""`carstream-operator`: runs the kopf operator of Pipelines and PipelineStages."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

from carstream_operator.settings import ENV_PREFIX, Settings, SettingsError


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carstream-operator",
        description="Runs carstream's Pipelines and PipelineStages as SparkApplications: "
        "ordering, restarts with backoff, time limits, schedules. Settings come from "
        f"{ENV_PREFIX}* environment variables; these flags override them.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        metavar="NAMESPACE",
        help="watch this namespace; repeat for more (default: all namespaces, or "
        f"{ENV_PREFIX}NAMESPACES, comma-separated)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces")
    parser.add_argument(
        "--liveness-port",
        type=_port,
        help="port of the liveness endpoint /healthz, 0 for none "
        f"(default {Settings.liveness_port}; {ENV_PREFIX}LIVENESS_PORT)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        help="port of the Prometheus metrics /metrics, 0 for none "
        f"(default {Settings.metrics_port}; {ENV_PREFIX}METRICS_PORT)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--debug", action="store_true", help="log everything kopf does")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    namespaces = settings.namespaces
    if args.namespace:
        namespaces = tuple(args.namespace)
    if args.all_namespaces:
        namespaces = ()
    return dataclasses.replace(
        settings,
        namespaces=namespaces,
        liveness_port=settings.liveness_port if args.liveness_port is None else args.liveness_port,
        metrics_port=settings.metrics_port if args.metrics_port is None else args.metrics_port,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except SettingsError as error:
        parser.error(str(error))

    # Imported only now: usage errors come fast. The handlers register themselves with kopf.
    import kopf
    import prometheus_client

    from carstream_operator.handlers import Runtime

    kopf.configure(verbose=args.verbose, debug=args.debug)
    if not args.debug:
        # The kubernetes client logs whole response bodies at DEBUG.
        for noisy in ("kubernetes", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.INFO)
    if not args.verbose and not args.debug:
        # kopf logs every handled watch event at INFO; the phase changes are logged anyway.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    runtime = Runtime.create(settings)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port)
    liveness = (
        f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    )
    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(runtime=runtime),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
