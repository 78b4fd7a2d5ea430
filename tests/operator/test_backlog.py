"""The backlog arithmetic the operator wakes stages on (operator/carstream_operator/backlog)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from carstream.config import Topics
from carstream_operator import backlog
from tests.operator.stage_simulation import stage_spec

A0, A1 = ("a", 0), ("a", 1)


def test_a_partition_no_group_committed_counts_from_its_start() -> None:
    processed = backlog.processed_offsets({A0: 10, A1: 7}, {A0: 2, A1: 0}, [{}], {})
    assert processed == {A0: 2, A1: 0}
    assert backlog.unprocessed_records({A0: 10, A1: 7}, processed) == 15


def test_the_least_advanced_group_counts() -> None:
    groups = [{A0: 8, A1: 7}, {A0: 5, A1: 7}]
    processed = backlog.processed_offsets({A0: 10, A1: 7}, {}, groups, {})
    assert processed == {A0: 5, A1: 7}


def test_the_floor_of_the_last_successful_run_covers_a_group_left_behind() -> None:
    processed = backlog.processed_offsets({A0: 10, A1: 7}, {}, [{A0: 3}], {A0: 9, A1: 7})
    assert processed == {A0: 9, A1: 7}
    assert backlog.unprocessed_records({A0: 10, A1: 7}, processed) == 1


def test_nothing_is_processed_past_the_end_or_before_the_start() -> None:
    # a topic recreated smaller, records deleted by retention
    processed = backlog.processed_offsets({A0: 4, A1: 9}, {A0: 0, A1: 6}, [{A0: 12, A1: 2}], {})
    assert processed == {A0: 4, A1: 6}


def test_status_keys_round_trip() -> None:
    offsets = {("sensors.x/y", 0): 5, ("b", 12): 0}
    kept = backlog.offsets_to_status(offsets)
    assert kept == {"b/12": 0, "sensors.x/y/0": 5}
    assert backlog.offsets_from_status(kept) == offsets
    assert backlog.offsets_from_status({"no-partition": 3, "a/1": "x"}) == {}


@pytest.mark.parametrize(
    ("job", "args", "topic", "groups"),
    [
        ("enrich", (), Topics().sensors, ("p.enrich",)),
        ("detect", ("--topic-enriched=mine",), "mine", ("p.detect",)),
        ("count", ("--topic-alerts", "x", "--rate", "3"), "x", ("p.count", "p.count-dead-letters")),
    ],
)
def test_a_stage_reads_the_topic_its_args_name(
    job: str, args: tuple[str, ...], topic: str, groups: tuple[str, ...]
) -> None:
    spec = replace(stage_spec(job=job, stage=job), pipeline="p", args=args)
    assert backlog.stage_input(spec) == backlog.StageInput(topic, groups)


def test_the_operator_knows_the_jobs_default_topics() -> None:
    defaults = Topics()
    roles = {role: default for role, default, _ in backlog.JOB_INPUTS.values()}
    assert roles == {role: getattr(defaults, role) for role in roles}


def test_a_batch_job_has_no_input_topic() -> None:
    assert backlog.stage_input(stage_spec(job="generate", stage="generate")) is None
