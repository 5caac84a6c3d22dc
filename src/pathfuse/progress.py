"""Progress lines in a job's log: where a long job is, its latest values, and when it should end.

An expert job on 1,000 slides or Shazam on 1,000 slides runs for hours; its log file (not only a
terminal bar, which a log file turns into a smear of carriage returns) must say at least every
``logging.progress_interval_s`` seconds what it is doing. A :class:`Progress` is one unit of work
counted in steps (a job's models, a training's epochs, a scoring's resamples). Units nest through a
context variable: the job opens one with :func:`scope`, and the training loop or the bootstrap
deep inside reports into it without being handed it (outside a job, :func:`current` gives a unit
that never writes). One line shows every open unit, outermost first, and each one's ETA::

    job: task tbin, encoder uni, fold 2/5, model outer | training: epoch 14/100, batch 120/400, last epoch:
    train_loss 0.4121, val_loss 0.5003, val_auroc 0.7811, best 0.8022 @ epoch 11 | ETA training ≤ 2m10s, job 38m04s

Cheap enough for every batch: between lines, a report is one clock reading and a comparison.
Field names are free text, so a caller training several heads at once can put all of theirs
(``**{"abmil val_auroc": 0.80, "mlp val_auroc": 0.77}``) on one line.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Progress:
    """One unit of work: steps done out of ``total``, the values to show, and its ETA.

    A nested unit shares its outermost unit's clock and interval: the job writes at most one
    periodic line per interval, whichever unit reports. ``bound`` marks an ETA that is an upper
    bound (a training that early stopping may end sooner).
    """

    def __init__(self, name: str, total: float, *, step: str = "step", parent: Progress | None = None,
                 interval: float = math.inf, clock: Clock = time.monotonic, bound: bool = False,
                 fields: dict[str, object] | None = None) -> None:
        self.name, self.total, self.step, self.parent, self.bound = name, float(total), step, parent, bound
        self.root: Progress = parent.root if parent is not None else self
        self.interval = interval
        self.clock: Clock = clock if parent is None else parent.root.clock
        self.fields: dict[str, object] = {}  # what the unit is at (note): fold, epoch, method
        self.values: dict[str, object] = {}  # what its last finished step gave (advance): losses, scores
        self.position: str | None = None  # where within the current step it is (tick): batch 3/8
        self.note(**(fields or {}))
        self.done = self.skipped = self.partial = 0.0
        self.child: Progress | None = None
        self.started = self.last_line = self.clock()

    def due(self) -> bool:
        """Whether the job's last line is at least one interval old."""
        root = self.root
        return root.clock() - root.last_line >= root.interval

    def note(self, **fields: object) -> None:
        """Set values shown on this unit's next lines (``None`` removes one); writes nothing."""
        for key, value in fields.items():
            if value is None:
                self.fields.pop(key, None)
            else:
                self.fields[key] = value

    def advance(self, steps: float = 1, /, **values: object) -> None:
        """Count finished steps and give the last one's values (they replace the previous); a line if due."""
        self.done += steps
        self.partial, self.position = 0.0, None
        self.values = {key: value for key, value in values.items() if value is not None}
        if self.due():
            self.line()

    def skip(self, steps: float = 1) -> None:
        """Count steps that needed no work here (resumed, skipped): done, but not in the ETA's rate."""
        self.done += steps
        self.skipped += steps

    def tick(self, i: int, n: int | None, noun: str = "batch") -> None:
        """Item ``i`` of ``n`` within the current step (e.g. a batch of an epoch); a line only if due."""
        if not self.due():
            return
        self.partial = i / n if n else 0.0
        self.position = f"{noun} {i}/{n}" if n else f"{noun} {i}"
        self.line()

    def fraction(self) -> float:
        """The share of ``total`` done, counting the current step's part and an open inner unit."""
        if self.total <= 0:
            return 1.0
        return min(1.0, (self.done + self._current_step()) / self.total)

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate of the work done here so far (None before any work)."""
        worked = self.done - self.skipped + self._current_step()
        if worked <= 0:
            return None
        return max(0.0, (now - self.started) * (self.total - self.skipped - worked) / worked)

    def line(self, event: str = "") -> None:
        """Write a line now: every open unit with its values, ``event`` on this one, the ETAs innermost first."""
        now = self.root.clock()
        self.root.last_line = now
        chain = [self]
        while (outer := chain[0].parent) is not None:
            chain.insert(0, outer)
        while (inner := chain[-1].child) is not None:
            chain.append(inner)
        parts = [unit._describe(event if unit is self else "") for unit in chain]
        etas = [f"{unit.name} {'≤ ' if unit.bound else ''}{duration(left)}" for unit in reversed(chain)
                if not (unit is self and event) and (left := unit.eta(now)) is not None]
        log.info("%s%s", " | ".join(parts), f" | ETA {', '.join(etas)}" if etas else "")

    def _current_step(self) -> float:
        return min(1.0, self.partial + (self.child.fraction() if self.child is not None else 0.0))

    def _describe(self, event: str) -> str:
        parts = [f"{key} {_value(value)}" for key, value in self.fields.items()]
        values = [f"{key} {_value(value)}" for key, value in self.values.items()]
        if self.position is not None:  # mid-step: the values are the previous step's
            parts.append(self.position)
            if values:
                values[0] = f"last {self.step}: {values[0]}"
        head = f"{self.name} {event}" if event else self.name
        return f"{head}: {', '.join(parts + values)}" if parts or values else head


_OPEN: ContextVar[Progress | None] = ContextVar("pathfuse_progress", default=None)


def current() -> Progress:
    """The innermost open unit; outside any (a library call, a test), a unit that never writes."""
    return _OPEN.get() or Progress("detached", 0)


@contextmanager
def scope(name: str, total: float, *, step: str = "step", interval: float | None = None, clock: Clock | None = None,
          bound: bool = False, **fields: object) -> Iterator[Progress]:
    """Open a unit of ``total`` steps (named ``step``) inside the current one; a line at its start and end.

    ``interval`` (seconds between periodic lines; the job's ``logging.progress_interval_s``) and
    ``clock`` apply to an outermost unit; a nested one uses its job's. An outermost unit without
    an interval writes only its start and end lines.
    """
    parent = _OPEN.get()
    if parent is None:
        unit = Progress(name, total, step=step, interval=math.inf if interval is None else interval,
                        clock=clock or time.monotonic, bound=bound, fields=fields)
    else:
        unit = Progress(name, total, step=step, parent=parent, bound=bound, fields=fields)
        parent.child = unit
    token = _OPEN.set(unit)
    unit.line("started")
    try:
        yield unit
        unit.done, unit.partial, unit.position = max(unit.done, unit.total), 0.0, None  # early stopping ends sooner
        unit.line(f"done in {duration(unit.clock() - unit.started)}")
    finally:
        _OPEN.reset(token)
        if parent is not None:
            parent.child = None


def duration(seconds: float) -> str:
    """``42s``, ``4m05s`` or ``1h08m``: short enough for a log line."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
