"""Survival metric kernels on units.

Harrell's c-index (with lifelines' conventions) and the IPCW integrated Brier score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from pathfuse.evaluation.units import UndefinedMetric, Units, required


def _c_index(u: Units, idx: np.ndarray) -> float:
    return c_index_arrays(required(u.time, "time")[idx], required(u.event, "event")[idx], required(u.risk, "risk")[idx])


def c_index_arrays(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C of per-patient risks, with lifelines' conventions.

    Ties in risk count 1/2; a censored time equal to an event time counts as surviving longer, so
    the value matches ``lifelines.utils.concordance_index(time, -risk, event)``.
    """
    if event.sum() == 0 or len(time) < 2:
        raise UndefinedMetric("no observed event or fewer than two patients")
    concordant = comparable = 0.0
    for start in range(0, len(time), 2048):  # row blocks bound the pairwise matrices' memory
        rows = slice(start, start + 2048)
        t_i, t_j = time[rows, None], time[None, :]
        pairs = (event[rows, None] == 1) & ((t_i < t_j) | ((t_i == t_j) & (event[None, :] == 0)))
        r_i, r_j = risk[rows, None], risk[None, :]
        concordant += ((r_i > r_j) & pairs).sum() + 0.5 * ((r_i == r_j) & pairs).sum()
        comparable += pairs.sum()
    if comparable == 0:
        raise UndefinedMetric("no admissible pairs")
    return float(concordant / comparable)


def _ibs(u: Units, idx: np.ndarray) -> float:
    if u.curves is None:
        raise UndefinedMetric("no bin_edges given")
    time, event, curves = required(u.time, "time")[idx], required(u.event, "event")[idx], u.curves[idx]
    all_grid = required(u.grid, "grid")  # set together with the curves
    keep = all_grid < time.max()
    grid, curves = all_grid[keep], curves[:, keep]
    if len(grid) < 2:
        raise UndefinedMetric("fewer than two evaluation times")
    g_at = _km_censoring(time, event)
    g_grid = g_at(grid, left=False)
    g_own = g_at(time, left=True)
    died = (time[:, None] <= grid[None, :]) & (event[:, None] == 1)
    alive = time[:, None] > grid[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(died, curves**2 / g_own[:, None], 0.0) + np.where(
            alive, (1 - curves) ** 2 / g_grid[None, :], 0.0
        )
    brier = terms.mean(axis=0)
    return float(np.trapezoid(brier, grid) / (grid[-1] - grid[0]))


class _StepCurve(Protocol):
    """A right-continuous step curve read at times ``t``: G(t), or G(t−) with ``left=True``."""

    def __call__(self, t: np.ndarray, left: bool) -> np.ndarray: ...


def _km_censoring(time: np.ndarray, event: np.ndarray) -> _StepCurve:
    """Kaplan-Meier curve G of the censoring times, as a function (t, left) → G(t) or G(t−)."""
    uniq, first = np.unique(np.sort(time), return_index=True)
    at_risk = len(time) - first
    censored = np.bincount(np.searchsorted(uniq, time[event == 0]), minlength=len(uniq))
    g = np.cumprod(1.0 - censored / at_risk)

    def at(t: np.ndarray, left: bool) -> np.ndarray:
        pos = np.searchsorted(uniq, t, side="left" if left else "right") - 1
        return np.where(pos >= 0, g[np.clip(pos, 0, None)], 1.0)

    return at


SURVIVAL_KERNELS: dict[str, Callable[[Units, np.ndarray], float]] = {
    "c_index": _c_index,
    "ibs": _ibs,
}
