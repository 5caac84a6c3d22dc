"""Progress lines (pathfuse.progress): rate limit, start/end lines, ETA, nesting; driven by a fake clock."""

from __future__ import annotations

import logging

import pytest

from pathfuse import progress
from pathfuse.progress import duration


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog):
    """The progress lines logged so far (a function: call it to read them)."""
    caplog.set_level(logging.INFO, logger="pathfuse.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "pathfuse.progress"]


def test_a_line_at_most_once_per_interval_plus_start_and_end(lines):
    clock = FakeClock()
    with progress.scope("job", 100, interval=30, clock=clock, task="t1") as job:
        assert lines() == ["job started: task t1"]
        for second in range(1, 95):
            clock.now += 1
            job.advance()
            assert len(lines()) == 1 + second // 30  # a line at 30, 60 and 90 s, none between
    assert len(lines()) == 5 and lines()[-1] == "job done in 1m34s: task t1"


def test_a_tick_within_a_step_is_silent_until_due_and_then_names_its_position(lines):
    clock = FakeClock()
    with progress.scope("training", 10, step="epoch", interval=60, clock=clock) as training:
        training.note(epoch="1/10")
        clock.now += 59
        training.tick(3, 8)
        assert len(lines()) == 1
        clock.now += 1
        training.tick(4, 8)
        assert lines()[-1].startswith("training: epoch 1/10, batch 4/8 | ETA training ")
        clock.now += 60
        training.advance(train_loss=0.25, val_loss=0.5)  # a finished step drops the batch position
        assert lines()[-1].startswith("training: epoch 1/10, train_loss 0.25, val_loss 0.5 | ETA")
        training.note(epoch="2/10")
        clock.now += 60
        training.tick(1, 8)  # mid-step, the values shown are the last step's
        assert lines()[-1].startswith("training: epoch 2/10, batch 1/8, last epoch: train_loss 0.25, val_loss 0.5 |")


def test_eta_follows_the_rate_of_the_work_done_here(lines):
    clock = FakeClock()
    with progress.scope("job", 10, interval=0, clock=clock) as job:
        clock.now += 20
        job.advance(2)  # 2 of 10 steps in 20 s: 80 s to go
        assert lines()[-1] == "job | ETA job 1m20s"
        job.skip(4)  # resumed steps are done but cost nothing: 4 left at 10 s each
        clock.now += 10
        job.advance()
        assert lines()[-1] == "job | ETA job 30s"
        clock.now += 15
        job.tick(1, 2, "resample")  # 3.5 steps worked in 45 s: 2.5 to go
        assert lines()[-1] == "job: resample 1/2 | ETA job 32s"


def test_nested_units_share_the_rate_limit_and_each_shows_its_eta(lines):
    clock = FakeClock()
    with progress.scope("job", 4, interval=30, clock=clock, fold="1/4") as job:
        with progress.scope("training", 10, bound=True) as training:
            assert progress.current() is training
            assert lines()[-1] == "job: fold 1/4 | training started"
            clock.now += 50
            training.advance(5, val_auroc=0.812345)  # half of one of the job's 4 steps in 50 s
            assert lines()[-1] == ("job: fold 1/4 | training: val_auroc 0.8123 | "
                                   "ETA training ≤ 50s, job 5m50s")
            clock.now += 10
            job.advance(0)  # the line just written makes the job's own report wait too
            assert len(lines()) == 3
        assert lines()[-1] == "job: fold 1/4 | training done in 1m00s: val_auroc 0.8123 | ETA job 3m00s"
        assert progress.current() is job


def test_several_heads_on_one_line_and_none_removes_a_value(lines):
    with progress.scope("job", 1, interval=0, clock=FakeClock(), seed=None, phase="bank") as job:
        job.advance(0, **{"abmil val_auroc": 0.8, "mlp val_auroc": 0.75})
        assert lines()[-1] == "job: phase bank, abmil val_auroc 0.8, mlp val_auroc 0.75"
        job.note(phase=None)
        job.advance(0, **{"abmil val_auroc": 0.9})  # a step's values replace the previous step's
        assert lines()[-1] == "job: abmil val_auroc 0.9"


def test_outside_a_job_reports_are_silent_and_a_lone_unit_logs_only_its_ends(lines):
    detached = progress.current()
    detached.tick(1, 2)
    detached.advance(train_loss=1.0)
    assert lines() == []
    clock = FakeClock()
    with progress.scope("training", 3, clock=clock) as training:  # no interval: no periodic lines
        clock.now += 1e6
        training.advance()
    assert lines() == ["training started", "training done in 277h46m"]


def test_a_failing_unit_writes_no_end_line_and_closes(lines):
    with pytest.raises(RuntimeError), progress.scope("job", 1, interval=0, clock=FakeClock()):
        raise RuntimeError("boom")
    assert lines() == ["job started"]
    assert progress.current().name == "detached"


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (59.6, "1m00s"), (3599, "59m59s"), (7380, "2h03m")])
def test_duration(seconds, text):
    assert duration(seconds) == text
