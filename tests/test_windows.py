"""Windows: bounded, exact ids from positions, safe commits, per-model sizes."""

from __future__ import annotations

import numpy as np

from monitor.windows import ClosedWindow, Column, Windows

LAYOUT = {"numeric": Column(2), "prediction": Column(None, np.int64, -1), "embedding": Column(3)}


def add(ws: Windows, key: str, offset: int, now: float = 0.0, index: int = 0) -> ClosedWindow | None:
    values = {"numeric": [float(offset), 1.0], "prediction": offset % 3,
              "embedding": [1.0, 2.0, 3.0] if offset % 2 else None}
    return ws.add(key, LAYOUT, values, ("t", 0, offset, index), float(offset), now)


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
    closed = [ws.add("a/1", layout, {"numeric": [float(i)]}, ("t", 0, 40, i), 0.0, 0.0) for i in range(5)]
    assert [w.window_id for w in closed if w is not None] == ["a/1@t-0:40"]
    assert ws.safe_positions({("t", 0): 41}) == {("t", 0): (40, 3)}  # skip the 3 events already windowed
    window = ws.add("a/1", layout, {"numeric": [5.0]}, ("t", 0, 41, 0), 0.0, 0.0)
    assert window is not None and (window.window_id, window.n) == ("a/1@t-0:40+3", 3)


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
    second = ws.add("llm/1", layout, {"numeric": []}, ("t", 0, 1, 0), 0.0, 0.0)
    assert first is None and second is not None and second.n == 2
    assert second.features.shape == (2, 0)
    assert second.present("llm").tolist() == [[5.0, -1.0]]


def test_a_window_read_again_gets_its_index_back_and_new_windows_go_on_after_the_last() -> None:
    layout = {"numeric": Column(1)}
    ws = Windows(size=2, max_seconds=60.0, min_samples=1)
    # another process published windows #4 (first event at offset 10) and #5 (offset 12) of m/1
    ws.resume({"m/1": 6}, {"m/1@t-0:10": 4, "m/1@t-0:12": 5})
    closed = [ws.add("m/1", layout, {"numeric": [float(o)]}, ("t", 0, o, 0), event_time=o, now=0.0)
              for o in range(10, 16)]
    assert [(w.window_id, w.index) for w in closed if w is not None] == [
        ("m/1@t-0:10", 4), ("m/1@t-0:12", 5), ("m/1@t-0:14", 6)]
    ws.resume({"m/1": 3}, {})  # an older record never moves the index back
    assert ws.next_index("m/1") == 7
