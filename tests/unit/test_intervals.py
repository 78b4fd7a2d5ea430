"""Intervals on the command line (--window, --slide, --watermark, --trigger-interval): every
spelling the flags accept is handed to Spark in words its interval parser takes."""

from __future__ import annotations

import argparse
import datetime

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from carstream.config import interval_arg, interval_seconds


@pytest.mark.parametrize(
    ("text", "spark_words", "seconds"),
    [
        ("5 seconds", "5 seconds", 5),
        ("1 second", "1 second", 1),
        ("5 s", "5 seconds", 5),
        ("500ms", "500 milliseconds", 0.5),
        ("1 min", "1 minute", 60),
        ("15 m", "15 minutes", 900),
        ("2 H", "2 hours", 7200),
        (" 30 Minutes ", "30 minutes", 1800),
    ],
)
def test_intervals_are_written_in_spark_words(text: str, spark_words: str, seconds: float) -> None:
    assert interval_arg(text) == spark_words
    assert interval_seconds(spark_words) == seconds


@pytest.mark.parametrize("text", ["0 seconds", "soon", "5 fortnights", "-1 minute"])
def test_bad_intervals_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        interval_arg(text)


def test_spark_takes_every_normalised_spelling(spark: SparkSession) -> None:
    at = datetime.datetime(2026, 1, 1, 0, 0, 30)
    frame = spark.createDataFrame([(at,)], "t timestamp")
    for text in ("500ms", "5 s", "1 min", "15 m", "1 h"):
        words = interval_arg(text)
        window = frame.select(F.window("t", words).alias("w")).first()
        assert window is not None, words
        length = window["w"]["end"] - window["w"]["start"]
        assert length.total_seconds() == interval_seconds(text), words
