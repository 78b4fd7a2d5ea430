"""When a processingTime stage counts as idle (--idle-stop-seconds)."""

from __future__ import annotations

from carstream.idle_stop import IdleWatch


def batch(batch_id: int, rows: int) -> dict[str, int]:
    return {"batchId": batch_id, "numInputRows": rows}


def test_idle_after_the_given_time_without_input() -> None:
    watch = IdleWatch(30, started=100.0)
    watch.observe({"q": [batch(0, 0), batch(1, 0)]}, now=110.0)
    assert not watch.idle(129.9)
    assert watch.idle(130.0)


def test_a_new_batch_with_rows_resets_the_clock() -> None:
    watch = IdleWatch(30, started=100.0)
    watch.observe({"q": [batch(0, 5)]}, now=120.0)
    assert not watch.idle(149.0)
    assert watch.idle(150.0)


def test_a_batch_already_seen_does_not_count_again() -> None:
    watch = IdleWatch(30, started=100.0)
    watch.observe({"q": [batch(0, 5), batch(1, 0)]}, now=101.0)
    # recentProgress still holds batch 0 later on: it is old input, not new
    watch.observe({"q": [batch(0, 5), batch(1, 0), batch(2, 0)]}, now=125.0)
    assert watch.idle(131.0)


def test_any_query_with_input_keeps_the_stage_awake() -> None:
    watch = IdleWatch(10, started=0.0)
    watch.observe({"count": [batch(3, 0)], "count-dead-letters": [batch(7, 2)]}, now=8.0)
    assert not watch.idle(17.0)
    assert watch.idle(18.0)


def test_reports_without_the_fields_are_ignored() -> None:
    watch = IdleWatch(10, started=0.0)
    watch.observe({"q": [{}, {"batchId": "x", "numInputRows": 3}, None]}, now=5.0)
    assert watch.idle(10.0)


def test_looks_often_enough_for_short_limits_and_rarely_for_long_ones() -> None:
    assert IdleWatch(10, started=0).poll_seconds == 2.5
    assert IdleWatch(3600, started=0).poll_seconds == 5.0
