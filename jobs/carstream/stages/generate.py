"""Stage 4, the data generator: sensor events for the cars of the dimension, to sensors-sample.

It reads the car ids of the cars dimension (<warehouse>/dims/cars, a local folder or s3a://)
and, at each tick, sends one event per car, keyed by car_id, as JSON:
{"event_id": UUID, "event_time": "2026-11-25T21:12:27.123Z", "car_id": ..., "speed": 0..200,
"rpm": 0..8000, "gear": 1..7}. Ticks are spaced so that --rate events per second go out on
average (default: 20 cars, one tick per second). It runs until --time-limit seconds or
--max-events events, or until Ctrl+C / SIGTERM; then it waits for every event to be
acknowledged by Kafka and exits (0 when all were delivered).

With --seed the values and event ids repeat from run to run; event_time is always the clock.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from carstream import metrics
from carstream.config import GeneratorSettings, KafkaSettings, StorageSettings, Topics
from carstream.kafka_admin import client_config
from carstream.metrics import GeneratorMetrics, MetricsSettings
from carstream.shutdown import stop_requested_on_signals
from carstream.stages import StageUsageError, configure_logging
from carstream.storage import NothingStored, read_parquet

STAGE = "generate"
SPEED_VALUES = 201  # 0..200
RPM_VALUES = 8001  # 0..8000
GEARS = 7  # 1..7

PRODUCER_CONFIG: dict[str, str | int | bool] = {
    # Throughput: big lz4 batches. Latency at low rates: a batch waits at most 5 ms.
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 1_000_000,
    # At-least-once without reordering; Java's partitioner, so a car lands on the same
    # partition whichever client wrote it.
    "acks": "all",
    "enable.idempotence": True,
    "partitioner": "murmur2_random",
    # Delivery reports only for failures: a Python callback per event would halve the rate.
    "delivery.report.only.error": True,
}
FLUSH_TIMEOUT_SECONDS = 60.0
# Between ticks the generator serves the producer's callbacks at least this often, so a refused
# login stops it within about a second whatever the rate.
IDLE_POLL_SECONDS = 0.5
MAX_EVENTS_PER_ROUND = 20_000
LOG_EVERY_SECONDS = 5.0

logger = logging.getLogger("carstream.generate")


class CarsMissing(RuntimeError):
    """The cars dimension cannot be read (not written yet, or empty)."""


@dataclass(frozen=True)
class GeneratorReport:
    sent: int
    """Events handed to the producer."""
    failed: int
    """Events Kafka did not acknowledge (delivery failed, or still unsent at the flush timeout)."""
    seconds: float
    stopped_by: str
    first_error: KafkaError | None = None
    """The first delivery failure."""

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# The cars dimension


def read_car_ids(storage: StorageSettings) -> list[int]:
    """The car ids of the cars dimension, in its row order (a folder, or S3 through boto3)."""
    location = storage.dim_path("cars")
    try:
        table = read_parquet(location, storage.s3, columns=["car_id"])
    except NothingStored:
        raise CarsMissing(
            f"cannot read the cars dimension at {location}: no Parquet files there; "
            "run `carstream stage dims` first"
        ) from None
    car_ids = [int(car_id) for car_id in table.column("car_id").to_pylist()]
    if not car_ids:
        raise CarsMissing(f"the cars dimension at {location} has no rows")
    return car_ids


def choose_cars(car_ids: Sequence[int], num_cars: int | None) -> list[int]:
    if num_cars is None:
        return list(car_ids)
    if num_cars > len(car_ids):
        raise StageUsageError(
            f"--num-cars {num_cars}: the cars dimension has only {len(car_ids)} cars"
        )
    return list(car_ids[:num_cars])


# ---------------------------------------------------------------------------------------------
# Events

_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


class EventFormatter:
    """Sensor events as JSON bytes, built with plain string formatting (no json.dumps, no
    uuid module) because the generator's throughput is bound by the cost per event."""

    def __init__(self, car_ids: Sequence[int], rng: random.Random) -> None:
        self.cars = [(str(car_id).encode(), car_id) for car_id in car_ids]
        self.rng = rng
        self._second = -1
        self._second_text = ""

    def timestamp(self, epoch_seconds: float) -> str:
        """ISO-8601 UTC with milliseconds, e.g. 2026-11-25T21:12:27.123Z."""
        millis = int(epoch_seconds * 1000)
        second, milli = divmod(millis, 1000)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        return f"{self._second_text}{milli:03d}Z"

    def tick(self, event_time: str, cars: int) -> list[tuple[bytes, str]]:
        """(key, value) of one event for each of the first `cars` cars."""
        chosen = self.cars if cars >= len(self.cars) else self.cars[:cars]
        count = len(chosen)
        ids = self.rng.randbytes(16 * count).hex()
        uniform = self.rng.random
        variant = _VARIANT
        events = []
        offset = 0
        for key, car_id in chosen:
            h = ids[offset : offset + 32]
            offset += 32
            events.append(
                (
                    key,
                    f'{{"event_id":"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-'
                    f'{h[20:]}","event_time":"{event_time}","car_id":{car_id},'
                    f'"speed":{int(uniform() * SPEED_VALUES)},'
                    f'"rpm":{int(uniform() * RPM_VALUES)},'
                    f'"gear":{int(uniform() * GEARS) + 1}}}',
                )
            )
        return events


# ---------------------------------------------------------------------------------------------
# Producing


# Errors after which sending more cannot help: a wrong password or a missing ACL. librdkafka
# retries a refused login for ever (it logs _AUTHENTICATION through error_cb and never fails
# a delivery for it), so the generator would keep producing into its local queue.
FATAL_KAFKA_ERRORS = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


class _Failures:
    """What went wrong in the producer: failed deliveries, and the first fatal error."""

    def __init__(self) -> None:
        self.count = 0
        self.first: KafkaError | None = None
        self.fatal: KafkaError | None = None

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.count += 1
            if self.first is None:
                self.first = error
            self._check_fatal(error)

    def on_client_error(self, error: KafkaError) -> None:
        logger.warning("Kafka client: %s", error)
        self._check_fatal(error)

    def _check_fatal(self, error: KafkaError) -> None:
        if self.fatal is None and (error.fatal() or error.code() in FATAL_KAFKA_ERRORS):
            self.fatal = error


def producer_config(kafka: KafkaSettings, failures: _Failures) -> dict[str, Any]:
    return {
        **client_config(kafka),
        **PRODUCER_CONFIG,
        "client.id": "carstream-generate",
        "on_delivery": failures.on_delivery,
        "error_cb": failures.on_client_error,
    }


def _produce_when_queue_has_room(
    producer: Producer, failures: _Failures, topic: str, value: str, key: bytes
) -> None:
    """The producer's local queue is full: serve delivery reports until a message fits."""
    while True:
        producer.poll(0.05)
        _stop_if_fatal(producer, failures)
        try:
            producer.produce(topic, value, key)
        except BufferError:
            continue
        return


def _stop_if_fatal(producer: Producer, failures: _Failures) -> None:
    """Raises the fatal error, if there was one, dropping what is still queued (it cannot be
    delivered: waiting for the flush timeout would only delay the failure)."""
    if failures.fatal is None:
        return
    producer.purge()
    producer.poll(0)
    raise KafkaException(failures.fatal)


def run(
    kafka: KafkaSettings,
    topics: Topics,
    settings: GeneratorSettings,
    car_ids: Sequence[int],
    *,
    stop: threading.Event | None = None,
    on_progress: Callable[[int, float], None] | None = None,
    metrics: GeneratorMetrics | None = None,
) -> GeneratorReport:
    """Sends events for `car_ids` until the time limit, the event limit or `stop` is set.
    Raises KafkaException at the first fatal Kafka error (FATAL_KAFKA_ERRORS: a refused login
    or a missing ACL), within about a second.

    Tick k is due k * len(car_ids) / rate seconds after the start; a tick that is late is sent
    at once, so the average rate holds even when the process was briefly descheduled.
    `on_progress(sent, elapsed_seconds)` is called every few seconds; `metrics` counts the
    events sent and not delivered.
    """
    if not car_ids:
        raise ValueError("no cars to generate events for")
    stop = stop or threading.Event()
    formatter = EventFormatter(car_ids, random.Random(settings.seed))
    cars = len(car_ids)
    tick_seconds = cars / settings.rate
    deadline = math.inf if settings.time_limit is None else settings.time_limit
    last_tick = math.inf if math.isinf(deadline) else math.ceil(deadline / tick_seconds)
    max_events = math.inf if settings.max_events is None else settings.max_events
    max_ticks_per_round = max(1, MAX_EVENTS_PER_ROUND // cars)
    failures = _Failures()
    producer = Producer(producer_config(kafka, failures))
    produce, poll, topic = producer.produce, producer.poll, topics.sensors
    sent = ticks = counted = 0
    stopped_by = "signal"
    started = time.monotonic()
    next_log = started + LOG_EVERY_SECONDS
    while not stop.is_set():
        now = time.monotonic()
        elapsed = now - started
        if elapsed >= deadline:
            stopped_by = "time limit"
            break
        if sent >= max_events:
            stopped_by = "max events"
            break
        due = int(min(elapsed // tick_seconds + 1, last_tick))
        if due <= ticks:
            wake = ticks * tick_seconds if ticks < last_tick else deadline
            stop.wait(min(max(0.0, wake - elapsed), IDLE_POLL_SECONDS))
            poll(0)
            _stop_if_fatal(producer, failures)
            continue
        event_time = formatter.timestamp(time.time())
        for _ in range(min(due - ticks, max_ticks_per_round)):
            events = formatter.tick(event_time, int(min(cars, max_events - sent)))
            for key, value in events:
                try:
                    produce(topic, value, key)
                except BufferError:
                    _produce_when_queue_has_room(producer, failures, topic, value, key)
            sent += len(events)
            ticks += 1
            if sent >= max_events:
                break
        poll(0)
        if metrics is not None:
            metrics.sent(sent - counted)
            counted = sent
        _stop_if_fatal(producer, failures)
        if on_progress is not None and now >= next_log:
            on_progress(sent, elapsed)
            next_log = now + LOG_EVERY_SECONDS
    unsent = producer.flush(FLUSH_TIMEOUT_SECONDS)
    seconds = time.monotonic() - started
    if failures.first is not None:
        logger.error(
            "%d events were not delivered, first error: %s", failures.count, failures.first
        )
    if unsent:
        logger.error("%d events were still unsent after %.0f s", unsent, FLUSH_TIMEOUT_SECONDS)
    if metrics is not None:
        metrics.failed(failures.count + unsent)
    return GeneratorReport(
        sent=sent,
        failed=failures.count + unsent,
        seconds=seconds,
        stopped_by=stopped_by,
        first_error=failures.first,
    )


# ---------------------------------------------------------------------------------------------
# `carstream stage generate`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    KafkaSettings.add_arguments(parser)
    Topics.add_arguments(parser)
    StorageSettings.add_arguments(parser)
    GeneratorSettings.add_arguments(parser)
    MetricsSettings.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Exit 0 once every event sent was delivered. A missing cars dimension, a fatal Kafka
    error or an undelivered event is raised (`carstream stage` reports it and exits 1)."""
    configure_logging()
    kafka, topics = KafkaSettings.from_args(args), Topics.from_args(args)
    storage, settings = StorageSettings.from_args(args), GeneratorSettings.from_args(args)
    observed = MetricsSettings.from_args(args)
    metrics.serve(observed)
    car_ids = choose_cars(read_car_ids(storage), settings.num_cars)
    logger.info(
        "sending %s events/s for %d cars to %s at %s",
        f"{settings.rate:g}",
        len(car_ids),
        topics.sensors,
        kafka.bootstrap_servers,
    )

    def log_progress(sent: int, elapsed: float) -> None:
        logger.info("%d events sent in %.0f s (%.0f/s)", sent, elapsed, sent / elapsed)

    with stop_requested_on_signals() as signals:
        report = run(
            kafka,
            topics,
            settings,
            car_ids,
            stop=signals,
            on_progress=log_progress,
            metrics=GeneratorMetrics(observed.pipeline),
        )
    logger.info(
        "stopped by %s: %d events sent in %.1f s (%.0f/s), %d not delivered",
        report.stopped_by,
        report.sent,
        report.seconds,
        report.rate,
        report.failed,
    )
    if report.failed:
        raise KafkaException(
            report.first_error
            or KafkaError(
                KafkaError._MSG_TIMED_OUT,
                f"{report.failed} events still unsent after {FLUSH_TIMEOUT_SECONDS:.0f} s",
            )
        )
    return 0
