"""Stage metrics from progress reports, observed counts and windows (no Spark, no Kafka)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY

from carstream import metrics
from carstream.consumer_groups import GroupLag, parse_offsets


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def progress(pipeline_query: str = "enrich", **overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "name": pipeline_query,
        "batchId": 3,
        "timestamp": "2026-11-30T08:00:10.000Z",
        "numInputRows": 500,
        "inputRowsPerSecond": 250.0,
        "processedRowsPerSecond": 1000.0,
        "batchDuration": 500,
        "eventTime": {"watermark": "2026-11-30T07:58:10.000Z"},
        "stateOperators": [{"numRowsTotal": 40}, {"numRowsTotal": 2}],
        "sources": [
            {
                "description": "KafkaV2[Subscribe[sensors-sample]]",
                "endOffset": '{"sensors-sample":{"0":100,"1":250}}',
                "latestOffset": '{"sensors-sample":{"0":130,"1":250}}',
            }
        ],
        "observedMetrics": {
            "enrich": {"valid": 490, "dead_letter_malformed_json": 4, "dead_letter_unknown_car": 6}
        },
    }
    report.update(overrides)
    return report


def test_a_progress_report_sets_every_query_metric() -> None:
    pipeline = f"p-{uuid.uuid4().hex[:6]}"
    metrics.record_progress(pipeline, progress())
    labels = {"pipeline": pipeline, "stage": "enrich", "query": "enrich"}
    assert sample("carstream_query_batches_total", **labels) == 1
    assert sample("carstream_query_input_rows_total", **labels) == 500
    assert sample("carstream_query_batch_rows", **labels) == 500
    assert sample("carstream_query_input_rows_per_second", **labels) == 250
    assert sample("carstream_query_processed_rows_per_second", **labels) == 1000
    assert sample("carstream_query_batch_duration_seconds_sum", **labels) == 0.5
    assert sample("carstream_query_watermark_delay_seconds", **labels) == 120
    assert sample("carstream_query_state_rows", **labels) == 42
    assert sample("carstream_query_last_progress_timestamp_seconds", **labels) == (
        datetime(2026, 11, 30, 8, 0, 10, tzinfo=UTC).timestamp()
    )
    lag = "carstream_query_consumer_lag_records"
    assert sample(lag, **labels, topic="sensors-sample", partition="0") == 30
    assert sample(lag, **labels, topic="sensors-sample", partition="1") == 0
    stage = {"pipeline": pipeline, "stage": "enrich"}
    assert sample("carstream_stage_records_total", **stage, outcome="valid") == 490
    assert sample("carstream_stage_records_total", **stage, outcome="dead_letter") == 10
    assert sample("carstream_stage_dead_letters_total", **stage, reason="malformed_json") == 4
    assert sample("carstream_stage_dead_letters_total", **stage, reason="unknown_car") == 6


def test_counts_add_up_over_batches_and_queries_map_to_their_stage() -> None:
    pipeline = f"p-{uuid.uuid4().hex[:6]}"
    observed = {"count-dead-letters": {"valid": 7, "dead_letter_wrong_type": 1}}
    for _ in range(2):
        metrics.record_progress(
            pipeline, progress("count-dead-letters", observedMetrics=observed, eventTime={})
        )
    labels = {"pipeline": pipeline, "stage": "count", "query": "count-dead-letters"}
    assert sample("carstream_query_batches_total", **labels) == 2
    assert sample("carstream_query_watermark_delay_seconds", **labels) is None
    reason = {"pipeline": pipeline, "stage": "count", "reason": "wrong_type"}
    assert sample("carstream_stage_dead_letters_total", **reason) == 2


def test_a_query_without_watermark_yet_reports_no_delay() -> None:
    pipeline = f"p-{uuid.uuid4().hex[:6]}"
    metrics.record_progress(
        pipeline, progress("count", eventTime={"watermark": "1970-01-01T00:00:00.000Z"})
    )
    labels = {"pipeline": pipeline, "stage": "count", "query": "count"}
    assert sample("carstream_query_watermark_delay_seconds", **labels) is None


def test_alerts_are_counted_by_rule() -> None:
    pipeline = f"p-{uuid.uuid4().hex[:6]}"
    metrics.record_observed(pipeline, "detect", {"alerts": 5, "rule_speed": 4, "rule_rpm": 2})
    rule = {"pipeline": pipeline, "stage": "detect"}
    assert sample("carstream_alerts_total", **rule, rule="speed") == 4
    assert sample("carstream_alerts_total", **rule, rule="rpm") == 2


def test_windows_set_the_newest_window_gauges() -> None:
    pipeline = f"p-{uuid.uuid4().hex[:6]}"
    start = datetime(2026, 11, 30, 8, 1, tzinfo=UTC)
    metrics.record_windows(
        pipeline,
        [
            {
                "window_start": datetime(2026, 11, 30, 8, 0, tzinfo=UTC),
                "num_of_rows": 9,
                "num_of_black": 1,
                "maximum_speed": 190,
            },
            {"window_start": start, "num_of_rows": 4, "num_of_black": 2, "maximum_speed": 150},
        ],
    )
    labels = {"pipeline": pipeline, "stage": "count"}
    assert sample("carstream_windows_updated_total", **labels) == 2
    assert sample("carstream_latest_window_alerts", **labels, family="all") == 4
    assert sample("carstream_latest_window_alerts", **labels, family="black") == 2
    assert sample("carstream_latest_window_maximum_speed", **labels) == 150
    assert sample("carstream_latest_window_start_timestamp_seconds", **labels) == start.timestamp()


def test_generator_metrics_start_at_zero() -> None:
    pipeline = f"p-{uuid.uuid4().hex[:6]}"
    generator = metrics.GeneratorMetrics(pipeline)
    labels = {"pipeline": pipeline, "stage": "generate"}
    assert sample("carstream_generator_delivery_errors_total", **labels) == 0
    generator.sent(20)
    generator.sent(5)
    assert sample("carstream_generator_events_sent_total", **labels) == 25


def test_spark_kafka_offsets_parse_and_other_sources_give_none() -> None:
    assert parse_offsets('{"a":{"0":5,"1":7}}') == {("a", 0): 5, ("a", 1): 7}
    assert parse_offsets(None) == {}
    assert parse_offsets("not json") == {}
    assert parse_offsets('{"a": 3}') == {}


def test_group_lag_counts_partitions_never_committed_from_their_start() -> None:
    lag = GroupLag("g", committed={("t", 0): 10}, end={("t", 0): 15, ("t", 1): 4})
    assert lag.total == 9


def test_the_stage_of_a_query_is_its_name_up_to_the_first_dash() -> None:
    assert metrics.stage_of("count-dead-letters") == "count"
    assert metrics.stage_of("enrich") == "enrich"


def test_the_fused_query_counts_for_enrich_and_for_detect() -> None:
    pipeline = f"p-{uuid.uuid4().hex[:6]}"
    observed = {
        "enrich": {"valid": 90, "dead_letter_unknown_car": 10},
        "detect": {"valid": 90, "alerts": 30, "rule_gear": 30},
    }
    metrics.record_progress(pipeline, progress("enrich-detect", observedMetrics=observed))
    enrich, detect = ({"pipeline": pipeline, "stage": stage} for stage in ("enrich", "detect"))
    assert sample("carstream_stage_records_total", **enrich, outcome="dead_letter") == 10
    assert sample("carstream_stage_records_total", **detect, outcome="valid") == 90
    assert sample("carstream_stage_records_total", **detect, outcome="dead_letter") is None
    assert sample("carstream_alerts_total", **detect, rule="gear") == 30
    query = {"pipeline": pipeline, "stage": "enrich", "query": "enrich-detect"}
    assert sample("carstream_query_input_rows_total", **query) == 500
