"""Record shapes of the pipeline: the dimension tables and the JSON messages on each topic.

A message shape lists its fields in output order, with the JSON type each must have and, for
integers, the inclusive range each must lie in. `carstream.validation` checks messages
against these shapes; the stages serialize their output in this field order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyspark.sql import types as T

FieldKind = Literal["string", "int", "timestamp", "string_array"]

_SPARK_TYPES: dict[FieldKind, T.DataType] = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    # A timestamp travels as an ISO-8601 string; validation checks and parses it.
    "timestamp": T.StringType(),
    "string_array": T.ArrayType(T.StringType()),
}

KIND_DESCRIPTIONS: dict[FieldKind, str] = {
    "string": "a string",
    "int": "an integer",
    "timestamp": "an ISO-8601 timestamp string",
    "string_array": "an array of strings",
}


@dataclass(frozen=True)
class Field:
    name: str
    kind: FieldKind
    minimum: int | None = None
    maximum: int | None = None

    @property
    def spark_type(self) -> T.DataType:
        return _SPARK_TYPES[self.kind]

    @property
    def has_range(self) -> bool:
        return self.minimum is not None or self.maximum is not None


@dataclass(frozen=True)
class MessageShape:
    """The fields a JSON object on a topic must have. Extra fields are ignored."""

    name: str
    fields: tuple[Field, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def spark_schema(self) -> T.StructType:
        return T.StructType([T.StructField(f.name, f.spark_type) for f in self.fields])

    def extended(self, name: str, *fields: Field) -> MessageShape:
        return MessageShape(name, self.fields + fields)


SENSOR_EVENT = MessageShape(
    "sensor event",
    (
        Field("event_id", "string"),
        Field("event_time", "timestamp"),
        Field("car_id", "int"),
        Field("speed", "int", 0, 200),
        Field("rpm", "int", 0, 8000),
        Field("gear", "int", 1, 7),
    ),
)

ENRICHMENT_FIELDS = (
    Field("driver_id", "int"),
    Field("brand_name", "string"),
    Field("model_name", "string"),
    Field("color_name", "string"),
    Field("expected_gear", "int", 0, 7),
)

ENRICHED_EVENT = SENSOR_EVENT.extended("enriched event", *ENRICHMENT_FIELDS)

ALERT = ENRICHED_EVENT.extended("alert", Field("rules", "string_array"))

# Dimension tables (Parquet).

CAR_MODELS = T.StructType(
    [
        T.StructField("model_id", T.IntegerType(), nullable=False),
        T.StructField("car_brand", T.StringType(), nullable=False),
        T.StructField("car_model", T.StringType(), nullable=False),
    ]
)

CAR_COLORS = T.StructType(
    [
        T.StructField("color_id", T.IntegerType(), nullable=False),
        T.StructField("color_name", T.StringType(), nullable=False),
    ]
)

CARS = T.StructType(
    [
        T.StructField("car_id", T.IntegerType(), nullable=False),
        T.StructField("driver_id", T.IntegerType(), nullable=False),
        T.StructField("model_id", T.IntegerType(), nullable=False),
        T.StructField("color_id", T.IntegerType(), nullable=False),
    ]
)

DIMENSIONS: dict[str, T.StructType] = {
    "car_models": CAR_MODELS,
    "car_colors": CAR_COLORS,
    "cars": CARS,
}
