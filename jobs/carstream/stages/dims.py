"""Stages 1-3: the car_models, car_colors and cars dimensions, as Parquet under <warehouse>/dims/.

car_models and car_colors hold fixed rows; cars holds --num-cars random cars (unique 7-digit
car_id, 9-digit driver_id, model_id and color_id uniform in 1..7) drawn from --seed, so the
same seed always gives the same rows. Each table is overwritten: running again is harmless.
"""

from __future__ import annotations

import argparse
import logging
import random
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from carstream import schemas, spark_io
from carstream.config import DimsSettings, StorageSettings
from carstream.lineage import LineageSettings
from carstream.stages import StageUsageError, configure_logging

CAR_MODELS_ROWS: tuple[tuple[int, str, str], ...] = (
    (1, "Mazda", "3"),
    (2, "Mazda", "6"),
    (3, "Toyota", "Corolla"),
    (4, "Hyundai", "i20"),
    (5, "Kia", "Sportage"),
    (6, "Kia", "Rio"),
    (7, "Kia", "Picanto"),
)

CAR_COLORS_ROWS: tuple[tuple[int, str], ...] = (
    (1, "Black"),
    (2, "Red"),
    (3, "Gray"),
    (4, "White"),
    (5, "Green"),
    (6, "Blue"),
    (7, "Pink"),
)

CAR_IDS = range(1_000_000, 10_000_000)
DRIVER_IDS = range(100_000_000, 1_000_000_000)
MAX_CARS = len(CAR_IDS)


def check_num_cars(num_cars: int) -> None:
    if not 0 < num_cars <= MAX_CARS:
        raise StageUsageError(
            f"--num-cars {num_cars}: must be within 1..{MAX_CARS} (distinct 7-digit car ids)"
        )


def car_rows(num_cars: int, seed: int) -> list[tuple[int, int, int, int]]:
    """(car_id, driver_id, model_id, color_id) for `num_cars` cars drawn from `seed`."""
    check_num_cars(num_cars)
    rng = random.Random(seed)
    car_ids = rng.sample(CAR_IDS, num_cars)
    model_ids = [model_id for model_id, _, _ in CAR_MODELS_ROWS]
    color_ids = [color_id for color_id, _ in CAR_COLORS_ROWS]
    return [
        (car_id, rng.choice(DRIVER_IDS), rng.choice(model_ids), rng.choice(color_ids))
        for car_id in car_ids
    ]


@dataclass(frozen=True)
class Dimensions:
    car_models: DataFrame
    car_colors: DataFrame
    cars: DataFrame

    def tables(self) -> dict[str, DataFrame]:
        return {"car_models": self.car_models, "car_colors": self.car_colors, "cars": self.cars}


def build(spark: SparkSession, settings: DimsSettings) -> Dimensions:
    return Dimensions(
        car_models=spark.createDataFrame(list(CAR_MODELS_ROWS), schemas.CAR_MODELS),
        car_colors=spark.createDataFrame(list(CAR_COLORS_ROWS), schemas.CAR_COLORS),
        cars=spark.createDataFrame(car_rows(settings.num_cars, settings.seed), schemas.CARS),
    )


def read(spark: SparkSession, storage: StorageSettings) -> Dimensions:
    """The three tables as written by `run` (raises spark_io.DataMissing if one is absent)."""
    frames = {
        table: spark_io.read_parquet(spark, storage.dim_path(table), f"{table} dimension")
        for table in schemas.DIMENSIONS
    }
    return Dimensions(**frames)


def run(spark: SparkSession, settings: DimsSettings, storage: StorageSettings) -> dict[str, int]:
    """Writes the three tables; returns the number of rows written per table."""
    written = {}
    for table, frame in build(spark, settings).tables().items():
        spark_io.write_parquet(frame, storage.dim_path(table))
        written[table] = frame.count()
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    DimsSettings.add_arguments(parser)
    StorageSettings.add_arguments(parser)
    LineageSettings.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    settings, storage = DimsSettings.from_args(args), StorageSettings.from_args(args)
    lineage = LineageSettings.from_args(args)
    check_num_cars(settings.num_cars)
    configure_logging()
    logger = logging.getLogger("carstream.dims")
    spark = spark_io.spark_session(
        "carstream-dims",
        with_kafka=False,
        s3=storage.s3_if_used,
        extra_conf=lineage.local_spark_conf(),
    )
    try:
        written = run(spark, settings, storage)
    finally:
        if not spark_io.under_spark_submit():
            spark.stop()
    for table, rows in written.items():
        logger.info("wrote %d rows to %s", rows, storage.dim_path(table))
    return 0
