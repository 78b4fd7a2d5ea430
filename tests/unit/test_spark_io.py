"""Helpers of the Spark I/O edge that need no Kafka: progress lines, small-table snapshots."""

from __future__ import annotations

from pyspark.sql import SparkSession

from carstream import spark_io


def test_progress_line_names_query_batch_rows_and_metrics() -> None:
    line = spark_io.describe_progress(
        {
            "name": "detect",
            "batchId": 4,
            "numInputRows": 1000,
            "processedRowsPerSecond": 2500.0,
            "batchDuration": 400,
            "observedMetrics": {
                "detect": {  # as in the progress report's JSON
                    "valid": 990,
                    "dead_letter_malformed_json": 3,
                    "dead_letter_out_of_range": 7,
                    "dead_letter_unknown_car": 0,
                    "alerts": 12,
                    "rule_speed": 10,
                    "rule_gear": 4,
                }
            },
        }
    )
    assert line == (
        "detect batch 4: 1000 read in 0.4 s (2,500 rows/s), quality: 990 valid, 10 dead letters "
        "(malformed_json 3, out_of_range 7), alerts=12, by rule: speed 10, gear 4"
    )


def test_snapshot_holds_the_rows_as_local_data(spark: SparkSession) -> None:
    frame = spark.createDataFrame([(1, "a"), (2, "b")], "id int, name string")
    local = spark_io.snapshot(frame)
    assert sorted(tuple(row) for row in local.collect()) == [(1, "a"), (2, "b")]
    assert "LocalTableScan" in local._jdf.queryExecution().executedPlan().toString()
