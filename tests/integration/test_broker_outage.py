"""A broker outage under a running stage: the broker is stopped and started again on the same
port at once (its clients' connections still in TIME_WAIT), and the stage, which kept
running, delivers every event, those sent before and after the outage."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from carstream.broker import EmbeddedBroker, port_is_free
from carstream.config import DimsSettings, GeneratorSettings, KafkaSettings, StorageSettings
from carstream.stages import dims, generate
from tests.fixtures.kafka import consume, end_offsets, json_values, unique_topics
from tests.integration.expected import expected_outputs, read_profiles
from tests.integration.processes import kill_group, start_carstream, wait_until

BEFORE, AFTER = 400, 400


def test_a_stage_rides_out_a_broker_restart_and_loses_nothing(
    spark: SparkSession, tmp_path: Path
) -> None:
    broker = EmbeddedBroker(tmp_path / "kafka").start()
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        port, controller_port = broker.port, broker.controller_port
        assert port is not None and controller_port is not None
        topics = unique_topics(kafka, "outage")
        storage = StorageSettings(warehouse=str(tmp_path / "warehouse"))
        dims.run(spark, DimsSettings(num_cars=10, seed=5), storage)
        cars = generate.read_car_ids(storage)
        events = GeneratorSettings(rate=1000, max_events=BEFORE, seed=5)
        generate.run(kafka, topics, events, cars)

        log = tmp_path / "enrich.out"
        stage = start_carstream(
            [
                "stage",
                "enrich",
                "--bootstrap-servers",
                kafka.bootstrap_servers,
                *("--topic-sensors", topics.sensors, "--topic-enriched", topics.enriched),
                *("--topic-dlq", topics.dlq, "--warehouse", storage.warehouse),
                *("--checkpoint-location", str(tmp_path / "checkpoints" / "enrich")),
                *("--trigger-interval", "1 second"),
            ],
            log,
        )
        try:
            wait_until(
                lambda: end_offsets(kafka, [topics.enriched])[topics.enriched] >= BEFORE,
                180,
                f"enrich to deliver the first {BEFORE} events (log: {log})",
            )

            broker.stop()
            assert port_is_free("127.0.0.1", port), "the stopped broker's port must be free"
            broker = EmbeddedBroker(
                tmp_path / "kafka", port=port, controller_port=controller_port
            ).start()
            assert stage.poll() is None, f"enrich died during the outage (log: {log})"

            generate.run(kafka, topics, GeneratorSettings(rate=1000, max_events=AFTER), cars)
            wait_until(
                lambda: end_offsets(kafka, [topics.enriched])[topics.enriched] >= BEFORE + AFTER,
                180,
                f"enrich to deliver the events sent after the restart (log: {log})",
            )
            assert stage.poll() is None, f"enrich stopped (log: {log})"
        finally:
            kill_group(stage)

        sensors = [m.value() or b"" for m in consume(kafka, topics.sensors)]
        expected = expected_outputs(sensors, read_profiles(Path(storage.warehouse)))
        assert len(expected.enriched) == BEFORE + AFTER
        enriched = {e["event_id"]: e for e in json_values(consume(kafka, topics.enriched))}
        assert enriched == expected.enriched, "every event enriched once the broker was back"
    finally:
        broker.stop()
