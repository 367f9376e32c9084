"""Windows: bounded, exact ids from positions, safe commits, per-model sizes."""

from __future__ import annotations

import numpy as np

from monitor.windows import ClosedWindow, Column, Windows

LAYOUT = {"numeric": Column(2), "prediction": Column(None, np.int64, -1), "embedding": Column(3)}


def add(ws: Windows, key: str, offset: int, now: float = 0.0, index: int = 0) -> ClosedWindow | None:
    values = {"numeric": [float(offset), 1.0], "prediction": offset % 3,
              "embedding": [1.0, 2.0, 3.0] if offset % 2 else None}
    closed = ws.add(key, LAYOUT, values, ("t", 0, offset, index), float(offset), now)
    assert len(closed) <= 1  # by count, one event closes at most its own window
    return closed[0] if closed else None


def test_windows_close_at_size_per_key_with_ids_from_the_first_position() -> None:
    ws = Windows(size=3, max_seconds=60, min_samples=2)
    closed = [w for off in range(8) if (w := add(ws, "a/1" if off % 2 == 0 else "b/1", off)) is not None]
    assert [(w.key, w.window_id, w.n) for w in closed] == [("a/1", "a/1@t-0:0", 3), ("b/1", "b/1@t-0:1", 3)]
    assert closed[0].features[:, 0].tolist() == [0.0, 2.0, 4.0]
    assert closed[0].predictions.tolist() == [0, 2, 1]
    assert closed[1].present("embedding").tolist() == [[1.0, 2.0, 3.0]] * 3  # only odd offsets carry one
    assert closed[0].present("embedding") is None
    assert ws.open_events == 2


def test_safe_positions_never_pass_an_open_window() -> None:
    ws = Windows(size=3, max_seconds=60, min_samples=2)
    for off in range(5):  # a/1 closes at 0,1,2; a second window opens at 3
        add(ws, "a/1", off)
    assert ws.safe_positions({("t", 0): 5, ("t", 1): 9}) == {("t", 0): (3, 0), ("t", 1): (9, 0)}
    add(ws, "a/1", 5)  # closes the window that started at 3
    assert ws.safe_positions({("t", 0): 6}) == {("t", 0): (6, 0)}


def test_a_window_opening_inside_a_batch_record_resumes_there() -> None:
    ws = Windows(size=3, max_seconds=60, min_samples=2)
    layout = {"numeric": Column(1)}
    closed = [w for i in range(5) for w in ws.add("a/1", layout, {"numeric": [float(i)]}, ("t", 0, 40, i), 0.0, 0.0)]
    assert [w.window_id for w in closed] == ["a/1@t-0:40"]
    assert ws.safe_positions({("t", 0): 41}) == {("t", 0): (40, 3)}  # skip the 3 events already windowed
    (window,) = ws.add("a/1", layout, {"numeric": [5.0]}, ("t", 0, 41, 0), 0.0, 0.0)
    assert (window.window_id, window.n) == ("a/1@t-0:40+3", 3)


def test_timeout_closes_only_windows_with_enough_samples() -> None:
    ws = Windows(size=100, max_seconds=10, min_samples=2)
    add(ws, "a/1", 0, now=0.0)
    add(ws, "b/1", 1, now=0.0)
    add(ws, "b/1", 2, now=1.0)
    assert ws.expired(now=5.0) == []
    (w,) = ws.expired(now=10.5)
    assert (w.key, w.n, w.reason) == ("b/1", 2, "timeout")


def test_a_model_can_have_its_own_window_size_and_no_numeric_features() -> None:
    ws = Windows(size=3, max_seconds=60, min_samples=1, sizes={"llm/1": 2})
    layout = {"numeric": Column(0), "llm": Column(2)}
    first = ws.add("llm/1", layout, {"numeric": [], "llm": [5.0, -1.0]}, ("t", 0, 0, 0), 0.0, 0.0)
    (second,) = ws.add("llm/1", layout, {"numeric": []}, ("t", 0, 1, 0), 0.0, 0.0)
    assert first == [] and second.n == 2
    assert second.features.shape == (2, 0)
    assert second.present("llm").tolist() == [[5.0, -1.0]]


def test_a_window_read_again_gets_its_index_back_and_new_windows_go_on_after_the_last() -> None:
    layout = {"numeric": Column(1)}
    ws = Windows(size=2, max_seconds=60.0, min_samples=1)
    # another process published windows #4 (first event at offset 10) and #5 (offset 12) of m/1
    ws.resume({"m/1": 6}, {"m/1@t-0:10": 4, "m/1@t-0:12": 5})
    closed = [w for o in range(10, 16)
              for w in ws.add("m/1", layout, {"numeric": [float(o)]}, ("t", 0, o, 0), event_time=o, now=0.0)]
    assert [(w.window_id, w.index) for w in closed] == [
        ("m/1@t-0:10", 4), ("m/1@t-0:12", 5), ("m/1@t-0:14", 6)]
    ws.resume({"m/1": 3}, {})  # an older record never moves the index back
    assert ws.next_index("m/1") == 7


# -- by event time -----------------------------------------------------------------------------------------
def timed(ws: Windows, key: str, offset: int, time: float, request_id: str = "", now: float = 0.0,
          partition: int = 0) -> list[ClosedWindow]:
    return ws.add(key, {"numeric": Column(1)}, {"numeric": [time]}, ("t", partition, offset, 0), time, now,
                  request_id=request_id)


def test_event_time_windows_are_aligned_to_the_epoch_and_close_when_the_watermark_passes_them() -> None:
    ws = Windows(size=10, max_seconds=60, min_samples=1, duration_s=60.0, lateness_s=5.0)
    times = [1_700_000_010.0, 1_700_000_041.0, 1_700_000_044.0, 1_700_000_030.0]  # minutes start at ..._040
    assert [w for o, t in enumerate(times) for w in timed(ws, "m/1", o, t)] == []  # 30 is in time (44 < 40 + 5)
    (closed,) = timed(ws, "m/1", 4, 1_700_000_045.0)  # the watermark passes 1_700_000_040 + 5
    assert closed.window_id == "m/1@t1699999980000" and closed.reason == "watermark"
    assert closed.features[:, 0].tolist() == [1_700_000_010.0, 1_700_000_030.0]
    (second,) = timed(ws, "m/1", 5, 1_700_000_200.0)
    assert second.window_id == "m/1@t1700000040000" and second.index == 1
    assert second.features[:, 0].tolist() == [1_700_000_041.0, 1_700_000_044.0, 1_700_000_045.0]
    assert (second.first_time, second.last_time) == (1_700_000_041.0, 1_700_000_045.0)


def test_late_events_are_dropped_or_go_to_the_first_open_window_and_are_counted() -> None:
    for late, kept in (("drop", [12.0]), ("next", [12.0, 3.0])):
        ws = Windows(size=10, max_seconds=60, min_samples=1, duration_s=10.0, lateness_s=1.0, late=late)
        timed(ws, "m/1", 0, 5.0)
        (first,) = timed(ws, "m/1", 1, 12.0)  # 12 >= 10 + 1: [0, 10) closes
        assert first.features[:, 0].tolist() == [5.0]
        assert timed(ws, "m/1", 2, 3.0) == []  # [0, 10) is closed: late
        (second,) = timed(ws, "m/1", 3, 25.0)
        assert second.window_id == "m/1@t10000" and second.features[:, 0].tolist() == kept
        assert ws.dropped == ({("m/1", "late"): 1} if late == "drop" else {("m/1", "late_next"): 1})


def test_an_event_inside_the_lateness_is_in_time_and_windows_with_no_event_are_never_opened() -> None:
    ws = Windows(size=10, max_seconds=60, min_samples=1, duration_s=10.0, lateness_s=15.0)
    timed(ws, "m/1", 0, 5.0)
    assert timed(ws, "m/1", 1, 24.0) == []  # [0, 10) waits until 25
    assert timed(ws, "m/1", 2, 9.0) == []  # still in time for [0, 10)
    closed = timed(ws, "m/1", 3, 100.0)  # passes [0, 10) and [20, 30); [10, 20) never had an event
    assert [(w.window_id, w.index, w.n) for w in closed] == [("m/1@t0", 0, 2), ("m/1@t20000", 1, 1)]
    assert ws.dropped == {}


def test_a_request_id_seen_twice_in_a_window_is_dropped_and_counted_in_both_modes() -> None:
    by_time = Windows(size=10, max_seconds=60, min_samples=1, duration_s=10.0)
    events = [(1.0, "a"), (2.0, "b"), (3.0, "a"), (11.0, "a"), (30.0, "c")]  # the second "a" is in [10, 20)
    closed = [w for o, (t, rid) in enumerate(events) for w in timed(by_time, "m/1", o, t, rid)]
    assert [w.features[:, 0].tolist() for w in closed] == [[1.0, 2.0], [11.0]]
    assert by_time.dropped == {("m/1", "duplicate"): 1}
    by_count = Windows(size=3, max_seconds=60, min_samples=1)
    closed = [w for o, rid in enumerate("abac") for w in timed(by_count, "m/1", o, float(o), rid)]
    assert [w.n for w in closed] == [3] and by_count.dropped == {("m/1", "duplicate"): 1}


def test_an_event_time_window_grows_up_to_max_rows_then_counts_what_it_cannot_hold() -> None:
    ws = Windows(size=10, max_seconds=60, min_samples=1, duration_s=10.0, max_rows=2500)
    for o in range(3000):
        timed(ws, "m/1", o, 1.0 + o / 10_000)
    (closed,) = timed(ws, "m/1", 3000, 50.0)
    assert closed.n == 2500 and closed.features[:, 0].tolist() == [1.0 + o / 10_000 for o in range(2500)]
    assert ws.dropped == {("m/1", "full"): 500}


def test_a_silent_version_has_its_event_time_windows_closed_and_their_events_are_late_after() -> None:
    ws = Windows(size=10, max_seconds=30, min_samples=5, duration_s=10.0, lateness_s=100.0)
    timed(ws, "m/1", 0, 1.0, now=0.0)
    timed(ws, "m/1", 1, 15.0, now=10.0)
    timed(ws, "b/1", 2, 1.0, now=25.0)
    assert ws.expired(now=39.0) == []
    closed = ws.expired(now=40.0)  # m/1's latest event came at 10; b/1 (at 25) waits
    assert [(w.window_id, w.reason, w.n) for w in closed] == [("m/1@t0", "timeout", 1), ("m/1@t10000", "timeout", 1)]
    assert timed(ws, "m/1", 3, 19.0, now=41.0) == [] and ws.dropped == {("m/1", "late"): 1}


def test_safe_positions_and_resume_hold_across_several_open_event_time_windows() -> None:
    ws = Windows(size=10, max_seconds=60, min_samples=1, duration_s=10.0, lateness_s=20.0)
    timed(ws, "m/1", 7, 5.0)
    timed(ws, "m/1", 8, 15.0, partition=1)
    timed(ws, "m/1", 9, 12.0)
    assert ws.safe_positions({("t", 0): 10, ("t", 1): 9}) == {("t", 0): (7, 0), ("t", 1): (8, 0)}
    assert ws.drop_all() == 3 and ws.open_events == 0
    fresh = Windows(size=10, max_seconds=60, min_samples=1, duration_s=10.0, lateness_s=20.0)
    fresh.resume({"m/1": 4}, {"m/1@t0": 3}, {"m/1": 31.0})  # [0, 10) closed as #3 elsewhere, at watermark 31
    assert fresh.watermark("m/1") == 31.0
    assert timed(fresh, "m/1", 7, 5.0) == [] and fresh.dropped == {("m/1", "late"): 1}
    assert timed(fresh, "m/1", 8, 12.0) == []  # 12 + 20 is after the watermark: in time
    (w,) = timed(fresh, "m/1", 9, 45.0)
    assert (w.window_id, w.index, w.n) == ("m/1@t10000", 4, 1)
