"""The left-out table: per task, which slides (or tiles) no method was scored on, and why.

Every expert of a task decides the same sample set (:mod:`pathfuse.data.availability`) and
records what it left out in its predictions' ``dropped`` metadata, so the table reads one
expert's file per task; a task whose experts disagree would be a bug, and is reported as such
rather than hidden.
"""

from __future__ import annotations

import logging

import pandas as pd

from pathfuse.config import Config
from pathfuse.io import read_parquet_meta

log = logging.getLogger(__name__)

COLUMNS = ["task", "reason", "n", "ids"]
#: Ids shown per reason in the Markdown copy (the Parquet table keeps them all).
SHOWN_IDS = 20


def left_out_table(cfg: Config) -> pd.DataFrame:
    """One row per (task, reason): how many samples were left out and their ids (sorted)."""
    rows = []
    for task in cfg.tasks:
        drops = [_dropped(cfg, task.id, e) for e in task.encoders]
        known = [d for d in drops if d is not None]
        if not known:
            continue
        if any(d != known[0] for d in known[1:]):
            log.warning("task %s: the experts record different left-out samples; showing %s's", task.id,
                        task.encoders[0])
        for reason, entry in sorted(known[0].items()):
            ids = sorted(map(str, entry.get("ids") or []))
            rows.append({"task": task.id, "reason": reason, "n": int(entry.get("n", len(ids))), "ids": ids})
    return pd.DataFrame(rows, columns=COLUMNS).astype({"n": "int64"})


def _dropped(cfg: Config, task: str, encoder: str) -> dict[str, dict] | None:
    path = cfg.layout.expert_predictions(task, encoder)
    if not path.exists():
        return None
    return dict(read_parquet_meta(path, schema="predictions").get("dropped") or {})


def left_out_view(table: pd.DataFrame) -> pd.DataFrame:
    """The Markdown view: count per (task, reason) and the first ids."""
    def shown(ids: list[str]) -> str:
        more = f" … (+{len(ids) - SHOWN_IDS})" if len(ids) > SHOWN_IDS else ""
        return ", ".join(ids[:SHOWN_IDS]) + more

    return pd.DataFrame({"task": table["task"], "reason": table["reason"], "left out": table["n"],
                         "ids": [shown(list(ids)) for ids in table["ids"]]})
