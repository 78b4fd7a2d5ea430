"""The dimensions: exact rows of car_models and car_colors, seeded cars, idempotent writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from carstream import schemas, spark_io
from carstream.config import DimsSettings, StorageSettings
from carstream.stages import StageUsageError, dims


def test_car_models_rows(spark: SparkSession) -> None:
    frame = dims.build(spark, DimsSettings()).car_models
    assert frame.schema == schemas.CAR_MODELS
    assert [tuple(row) for row in frame.collect()] == [
        (1, "Mazda", "3"),
        (2, "Mazda", "6"),
        (3, "Toyota", "Corolla"),
        (4, "Hyundai", "i20"),
        (5, "Kia", "Sportage"),
        (6, "Kia", "Rio"),
        (7, "Kia", "Picanto"),
    ]


def test_car_colors_rows(spark: SparkSession) -> None:
    frame = dims.build(spark, DimsSettings()).car_colors
    assert frame.schema == schemas.CAR_COLORS
    assert [tuple(row) for row in frame.collect()] == [
        (1, "Black"),
        (2, "Red"),
        (3, "Gray"),
        (4, "White"),
        (5, "Green"),
        (6, "Blue"),
        (7, "Pink"),
    ]


def test_cars_are_seeded() -> None:
    assert dims.car_rows(20, seed=7) == dims.car_rows(20, seed=7)
    assert dims.car_rows(20, seed=7) != dims.car_rows(20, seed=8)


def test_cars_values() -> None:
    cars = dims.car_rows(2000, seed=42)
    car_ids = [car_id for car_id, _, _, _ in cars]
    assert len(set(car_ids)) == 2000
    assert all(1_000_000 <= car_id <= 9_999_999 for car_id in car_ids)
    assert all(100_000_000 <= driver_id <= 999_999_999 for _, driver_id, _, _ in cars)
    assert {model_id for _, _, model_id, _ in cars} == set(range(1, 8))
    assert {color_id for _, _, _, color_id in cars} == set(range(1, 8))


def test_number_of_cars_is_bounded() -> None:
    with pytest.raises(StageUsageError, match="--num-cars"):
        dims.car_rows(9_000_001, seed=1)


def test_run_writes_parquet_and_overwrites(spark: SparkSession, tmp_path: Path) -> None:
    storage = StorageSettings(warehouse=str(tmp_path / "warehouse"))
    assert dims.run(spark, DimsSettings(num_cars=30, seed=3), storage) == {
        "car_models": 7,
        "car_colors": 7,
        "cars": 30,
    }
    dims.run(spark, DimsSettings(num_cars=12, seed=3), storage)
    written = dims.read(spark, storage)
    assert [tuple(row) for row in written.cars.collect()] == dims.car_rows(12, seed=3)
    assert written.car_models.count() == 7
    assert (tmp_path / "warehouse" / "dims" / "car_colors").is_dir()


def test_reading_missing_dimensions_says_what_to_do(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(spark_io.DataMissing, match="run `carstream stage dims` first"):
        dims.read(spark, StorageSettings(warehouse=str(tmp_path / "nothing")))
