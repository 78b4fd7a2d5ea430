"""Parsing of JSON messages into typed columns, and routing of bad ones to the dead-letter topic.

Everything here is Spark SQL expressions (no Python UDFs), so that validation runs at the speed
of the JVM. A valid message costs one `from_json`; only invalid messages pay for the diagnosis
that names the reason (the diagnosis sits in the `otherwise` branch of a CASE, which Spark
evaluates only for rows that take it).

Reasons, in the order they are checked (the first that applies wins):

- `malformed JSON` (also: `... empty message`, `... not a JSON object`)
- `missing field: NAME` (absent, or `... is null`)
- `wrong type: NAME must be ..., got ...` (e.g. a string where an integer is required, an
  `event_time` that is not an ISO-8601 timestamp with a zone)
- `out of range: NAME = VALUE, must be within MIN..MAX`
- stage-specific reasons added later, e.g. `unknown car: CAR_ID` (enrich)

Leniency inherited from Spark's JSON parser, kept for speed: a number where a string is
expected is taken as its text, and bytes after the closing brace of the object are ignored.
"""

from __future__ import annotations

import re
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from carstream.metrics import DEAD_LETTER_COUNT_PREFIX, VALID_COUNT
from carstream.schemas import KIND_DESCRIPTIONS, Field, MessageShape

REASON = "reason"
SOURCE = "source"
"""Struct column holding the Kafka record a row came from: key, value, topic, partition, offset."""

KAFKA_SOURCE_COLUMNS = ("key", "value", "topic", "partition", "offset")

DLQ_HEADER_PREFIX = "carstream.dlq."
REASON_KINDS: dict[str, str] = {
    "malformed_json": "malformed JSON",
    "missing_field": "missing field",
    "wrong_type": "wrong type",
    "out_of_range": "out of range",
    "unknown_car": "unknown car",
}
"""Kinds of dead-letter reason (metric labels) and the text their reasons start with; a reason
that starts with none of them is of kind `invalid`."""

ISO_8601_INSTANT = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
_SHOWN_VALUE_CHARS = 40


def event_timestamp(text: Column) -> Column:
    """The instant an ISO-8601 date-time with a zone denotes, or null if it is not one."""
    return F.when(text.rlike(ISO_8601_INSTANT), text.try_cast(T.TimestampType()))


def is_dead_letter() -> Column:
    return F.col(REASON).isNotNull()


def _is_valid(field: Field, value: Column) -> Column:
    check = value.isNotNull()
    if field.kind == "timestamp":
        check = check & event_timestamp(value).isNotNull()
    if field.minimum is not None:
        check = check & (value >= field.minimum)
    if field.maximum is not None:
        check = check & (value <= field.maximum)
    return check


def _shown(value: Column) -> Column:
    return F.concat(F.lit("'"), F.substring(value, 1, _SHOWN_VALUE_CHARS), F.lit("'"))


def _range_text(field: Field) -> str:
    low = "" if field.minimum is None else str(field.minimum)
    high = "" if field.maximum is None else str(field.maximum)
    return f"{low}..{high}"


def _outside_generated_code(expression: Column) -> Column:
    """The same value, computed by Spark's interpreter: the generated code only calls it.

    Higher-order functions are not code-generated. Without this, the diagnosis (a CASE of
    dozens of branches) grows the whole-stage generated method beyond the 8000 bytes of
    bytecode that the JVM's JIT compiles, and every row, valid or not, runs ~40% slower.
    """
    return F.element_at(F.transform(F.array(F.lit(0)), lambda _: expression), 1)


def _diagnosis(text: Column, parsed: Column, shape: MessageShape) -> Column:
    """The reason an invalid message is invalid. Meaningless (but harmless) for valid ones."""
    keys = F.json_object_keys(text)
    reason = F.when(
        text.isNull() | (F.trim(text) == ""), F.lit("malformed JSON: empty message")
    ).when(
        keys.isNull(),
        F.when(
            F.get_json_object(text, "$").isNotNull(), F.lit("malformed JSON: not a JSON object")
        ).otherwise(F.lit("malformed JSON")),
    )
    for field in shape.fields:
        value = parsed[field.name]
        raw = F.get_json_object(text, f"$.{field.name}")
        expected = KIND_DESCRIPTIONS[field.kind]
        wrong_type = f"wrong type: {field.name} must be {expected}, got "
        reason = (
            reason.when(~F.array_contains(keys, field.name), F.lit(f"missing field: {field.name}"))
            .when(value.isNull() & raw.isNull(), F.lit(f"missing field: {field.name} is null"))
            .when(
                value.isNull(),
                F.concat(
                    F.lit(wrong_type),
                    F.when(
                        text.rlike(rf'"{re.escape(field.name)}"\s*:\s*"'), F.lit("the string ")
                    ).otherwise(F.lit("")),
                    _shown(raw),
                ),
            )
        )
        if field.kind == "timestamp":
            reason = reason.when(
                event_timestamp(value).isNull(), F.concat(F.lit(wrong_type), _shown(value))
            )
    for field in shape.fields:
        if field.has_range:
            value = parsed[field.name]
            reason = reason.when(
                ~_is_valid(field, value),
                F.concat(
                    F.lit(f"out of range: {field.name} = "),
                    value.cast("string"),
                    F.lit(f", must be within {_range_text(field)}"),
                ),
            )
    return reason.otherwise(F.lit(f"invalid {shape.name}"))


def parse_messages(messages: DataFrame, shape: MessageShape) -> DataFrame:
    """Kafka records (key, value, topic, partition, offset, ...) -> typed messages.

    The result has the struct column `source` (the Kafka record, for dead letters), one column
    per field of `shape` (null where the message is invalid) and `reason`: null for a valid
    message, else why it is not.
    """
    text = F.col("value").cast("string")
    parsed = F.col("_parsed")
    valid = reduce(
        lambda left, right: left & right,
        (_is_valid(field, parsed[field.name]) for field in shape.fields),
    )
    checked = messages.select(
        F.struct(*KAFKA_SOURCE_COLUMNS).alias(SOURCE),
        text.alias("_text"),
        F.from_json(text, shape.spark_schema()).alias("_parsed"),
    ).withColumn("_valid", valid)
    is_valid = F.col("_valid")
    return checked.select(
        SOURCE,
        *(F.when(is_valid, parsed[field.name]).alias(field.name) for field in shape.fields),
        F.when(is_valid, F.lit(None).cast("string"))
        .otherwise(_outside_generated_code(_diagnosis(F.col("_text"), parsed, shape)))
        .alias(REASON),
    )


def quality_counts() -> list[Column]:
    """Aggregates for `DataFrame.observe` over rows with `reason`: the valid ones (`valid`)
    and the dead letters of each kind (`dead_letter_<kind>`, REASON_KINDS and `invalid`)."""
    reason = F.col(REASON)
    known = [reason.startswith(text) for text in REASON_KINDS.values()]
    counts = [F.count_if(reason.isNull()).alias(VALID_COUNT)]
    counts += [
        F.count_if(check).alias(DEAD_LETTER_COUNT_PREFIX + kind)
        for kind, check in zip(REASON_KINDS, known, strict=True)
    ]
    unknown = reduce(lambda left, right: left & right, (~check for check in known))
    counts.append(
        F.count_if(reason.isNotNull() & unknown).alias(DEAD_LETTER_COUNT_PREFIX + "invalid")
    )
    return counts


def flag(rows: DataFrame, condition: Column, reason: Column) -> DataFrame:
    """Marks still-valid rows for which `condition` holds as dead letters with `reason`."""
    return rows.withColumn(
        REASON, F.when(is_dead_letter() | ~condition, F.col(REASON)).otherwise(reason)
    )


def dead_letter_headers(stage: str) -> Column:
    """Kafka headers of a dead letter: stage, reason and the record's topic/partition/offset."""

    def header(name: str, value: Column) -> Column:
        return F.struct(
            F.lit(DLQ_HEADER_PREFIX + name).alias("key"), value.cast("binary").alias("value")
        )

    source = F.col(SOURCE)
    return F.array(
        header("stage", F.lit(stage)),
        header("reason", F.col(REASON)),
        header("topic", source["topic"]),
        header("partition", source["partition"].cast("string")),
        header("offset", source["offset"].cast("string")),
    )


def to_kafka_records(
    rows: DataFrame,
    *,
    stage: str,
    output_topic: str,
    dlq_topic: str,
    key: Column,
    value: Column,
) -> DataFrame:
    """Rows -> Kafka records (topic, key, value, headers) for one sink writing both outputs.

    A valid row goes to `output_topic` with `key` and `value` (both evaluated only for valid
    rows); a dead letter goes to `dlq_topic` with its original key and value bytes and headers
    saying why.
    """
    dead = is_dead_letter()
    source = F.col(SOURCE)
    return rows.select(
        F.when(dead, F.lit(dlq_topic)).otherwise(F.lit(output_topic)).alias("topic"),
        F.when(dead, source["key"]).otherwise(key.cast("binary")).alias("key"),
        F.when(dead, source["value"]).otherwise(value.cast("binary")).alias("value"),
        F.when(dead, dead_letter_headers(stage)).alias("headers"),
    )


def dead_letters(rows: DataFrame, *, stage: str, dlq_topic: str) -> DataFrame:
    """Only the dead letters of `rows`, as Kafka records for the dead-letter topic."""
    source = F.col(SOURCE)
    return rows.where(is_dead_letter()).select(
        F.lit(dlq_topic).alias("topic"),
        source["key"].alias("key"),
        source["value"].alias("value"),
        dead_letter_headers(stage).alias("headers"),
    )
