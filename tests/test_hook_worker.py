"""The worker every alert hook hands its jobs to: in order, bounded, never stopped by a failing job, closed with a
grace period."""

from __future__ import annotations

import threading

from monitor.alerts import HookWorker
from tests.support import wait_until


def test_jobs_are_worked_in_order_and_a_failing_one_costs_only_itself() -> None:
    done: list[int] = []

    def work(job: int) -> None:
        if job == 2:
            raise RuntimeError("a bug in one job")
        done.append(job)

    worker = HookWorker("inferwatch-test", work, queue_size=10)
    for job in range(5):
        assert worker.submit(job)
    assert worker.close(timeout_s=30.0) == []
    assert done == [0, 1, 3, 4]
    assert not worker.submit(5)  # closed: nothing more is taken


def test_a_full_queue_pushes_out_the_oldest_waiting_and_says_which() -> None:
    release = threading.Event()
    started = threading.Event()
    done: list[int] = []
    dropped: list[int] = []
    depths: list[tuple[int, int]] = []

    def work(job: int) -> None:
        started.set()
        release.wait(30.0)
        done.append(job)

    worker = HookWorker("inferwatch-test", work, queue_size=2, dropped=dropped.append,
                        depth=lambda waiting, busy: depths.append((waiting, busy)))
    worker.submit(0)
    assert started.wait(30.0)  # job 0 is in hand: 1, 2 wait, 3 pushes out 1
    for job in (1, 2, 3):
        worker.submit(job)
    assert dropped == [1]
    assert worker.backlog == 3
    release.set()
    assert worker.close(timeout_s=30.0) == []
    assert done == [0, 2, 3]
    assert depths[-1] == (0, 0)
    assert max(w for w, _ in depths) == 2  # never more than queue_size waiting


def test_close_returns_what_was_left_and_tells_the_job_in_hand_to_stop() -> None:
    started = threading.Event()

    def work(job: int) -> None:
        started.set()
        worker.stopping.wait(60.0)  # a job retrying until told to stop

    worker = HookWorker("inferwatch-test", work, queue_size=5)
    for job in range(3):
        worker.submit(job)
    assert started.wait(30.0)
    left = worker.close(timeout_s=0.05, stop_wait_s=30.0)
    assert left == [1, 2]
    assert worker.stopping.is_set()
    wait_until(lambda: worker.backlog == 0, "the job in hand to stop")
