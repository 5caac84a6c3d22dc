"""What a person reads equals the data: every cell of every Markdown table against its Parquet table.

The report's Markdown copies (tables/*.md) are parsed back and each cell is compared with the Parquet
value(s) it shows, on the run of tests/report/conftest.py (real prediction files, evaluated and
reported by the stage's own code). The rule is the renderer's (pathfuse.report.rendering): a number
read back with its unit (ms/s/min/h; k/M/G) equals the Parquet value rounded as displayed; a
missing value (NaN) reads as the missing mark "—" (a rank: "–"), never "nan"; words are exact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pathfuse.config import Config
from pathfuse.evaluation.metrics import HIGHER_IS_BETTER
from pathfuse.io import read_parquet
from pathfuse.report.markdown import render_all
from pathfuse.report.rendering import MISSING
from pathfuse.report.run import TABLES
from pathfuse.report.tables import missing_cells

#: A number as the renderer writes it, with its unit where it has one; or a dash for a missing one.
_NUMBER = re.compile(r"([+-]?\d+(?:\.(\d+))?)(?: (ms|s|min|h|k|M|G)\b)?|[—–]")
_UNIT = {None: 1.0, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "k": 1e3, "M": 1e6, "G": 1e9}
_ROW = re.compile(r"(?<!\\)\|")
NO_MOVE = "NO: ≈ uniform product of experts"


@dataclass(frozen=True)
class Shown:
    """A cell showing numbers: its text with each number as ``#``, the Parquet values in order, bold."""

    template: str
    values: tuple[float, ...]
    bold: bool = False


Cell = str | Shown
Tables = dict[str, tuple[pd.DataFrame, dict[str, Any]]]


def shown(template: str, *values: Any, bold: bool = False) -> Shown:
    return Shown(template, tuple(math.nan if pd.isna(v) else float(v) for v in values), bool(bold))


def read_back(text: str) -> tuple[str, list[tuple[float, float]]]:
    """The cell's template and its numbers, each with half a unit of its last displayed digit."""
    numbers = []
    for m in _NUMBER.finditer(text):
        if m.group(1) is None:
            numbers.append((math.nan, 0.0))
            continue
        unit = _UNIT[m.group(3)]
        numbers.append((float(m.group(1)) * unit, 0.5 * 10.0 ** -len(m.group(2) or "") * unit))
    return _NUMBER.sub("#", text), numbers


def mismatch(text: str, want: Cell) -> str | None:
    """Why the Markdown cell ``text`` does not show ``want`` (None when it does)."""
    if isinstance(want, str):
        return None if text == want else f"{text!r} != {want!r}"
    bold = text.startswith("**") and text.endswith("**")
    body = text[2:-2] if bold else text
    if bold != want.bold:
        return f"{text!r}: bold should be {want.bold}"
    if body == MISSING:
        return None if math.isnan(want.values[0]) else f"{text!r} hides {want.values}"
    template, numbers = read_back(body)
    if template != want.template or len(numbers) != len(want.values):
        return f"{text!r} is not {want.template!r} of {want.values}"
    for (got, tol), value in zip(numbers, want.values, strict=True):
        if math.isnan(got) != math.isnan(value) or abs(got - value) > tol * (1 + 1e-9):
            return f"{text!r} does not show {want.values}"
    return None


def markdown_sections(text: str) -> dict[str, list[list[str]]]:
    """Heading ("" before the first) → the rows of its table, header first (the alignment row dropped)."""
    sections: dict[str, list[list[str]]] = {}
    heading = ""
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in _ROW.split(line)[1:-1]]
            sections.setdefault(heading, []).append(cells)
    return {h: [rows[0], *rows[2:]] for h, rows in sections.items()}


# ----------------------------------------------------------------------------- expected cells
def benchmark_cells(t: Tables) -> dict[str, list[dict[str, Cell]]]:
    bench, meta = t["benchmark"]
    level = round(100 * float(meta["ci_level"]))
    out = {}
    for task, rows in bench.groupby("task", sort=False):
        prim = meta["primary_metric"][task]
        facts = (meta.get("task_facts") or {}).get(task)
        heading = f"{task} ({rows['kind'].iloc[0]}; primary: {prim})" + (f"; {facts}" if facts else "")
        best = {m: g["mean"].max() if HIGHER_IS_BETTER[m] else g["mean"].min() for m, g in rows.groupby("metric")}
        pooled = rows.loc[rows["metric"] == prim, "pooled"].notna().any()
        out[heading] = []
        for method, cells in rows.groupby("method", sort=False):
            by = cells.set_index("metric")
            p = by.loc[prim]
            row: dict[str, Cell] = {"method": method, "family": p["family"]}
            for metric, r in by.iterrows():
                top = r["mean"] == best[metric]
                row[metric] = shown("# ± #", r["mean"], r["sd"], bold=top) if pd.notna(r["sd"]) else \
                    shown("#", r["mean"], bold=top)
            row[f"{prim} mean [{level}% CI]"] = shown("# [#, #]", p["mean"], p["ci_low"], p["ci_high"])
            if pooled:
                row[f"{prim} POOLED over folds [{level}% CI]"] = shown("# [#, #]", p["pooled"], p["pooled_ci_low"],
                                                                       p["pooled_ci_high"])
            undefined = f" (undefined: {p['undefined_folds']})" if p["undefined_folds"] else ""
            row["folds"] = f"{p['n_folds']}/{p['n_folds_expected']}{undefined}"
            row["test patients per fold"] = p["n_test_patients"]
            out[heading].append(row)
    return out


def ranks_cells(t: Tables) -> dict[str, list[dict[str, Cell]]]:
    ranks, meta = t["ranks"]
    level = round(100 * float(meta["ci_level"]))
    value, gain = [], []
    for task, rows in ranks.groupby("task", sort=False):
        refs = rows["reference"].dropna()
        value.append({"task": task, "metric": rows["metric"].iloc[0]})
        gain.append({"task": task, "best expert": refs.iloc[0] if len(refs) else MISSING})
        for r in rows.itertuples():
            value[-1][r.method] = shown("# (#)", r.value, r.rank, bold=r.is_first)
            arrow = {1: " ↑", -1: " ↓"}.get(0 if pd.isna(r.significance) else int(r.significance), "")
            gain[-1][r.method] = shown(f"# [#, #]{arrow}", *(100 * v for v in (r.gain, r.gain_ci_low, r.gain_ci_high)))
    return {"Primary metric (rank); bold = first on the task": value,
            f"Gain over the validation-selected best expert (points, paired {level}% CI; ↑/↓ significant)": gain}


def summary_cells(t: Tables) -> dict[str, list[dict[str, Cell]]]:
    summary, ranks = t["summary"][0], t["ranks"][0]
    rows: list[dict[str, Cell]] = [{
        "method": r.method, "family": r.family, "first on": r.wins_of or MISSING,
        "mean rank": shown("# (#/#)", r.mean_rank, r.n_scored, r.n_tasks),
        "mean gain (points)": shown("# (#/#)", r.mean_gain_points, r.n_paired, r.n_tasks),
        "mean gain (%)": shown("#%", r.mean_gain_pct),
        "significant wins / losses": shown("# / #", r.sig_wins, r.sig_losses),
        "missing cells": shown("#", r.n_missing),
        "external gain (points)": shown("# (#)", r.external_mean_gain_points if r.external_n else math.nan,
                                        r.external_n),
    } for r in summary.itertuples()]
    missing: list[dict[str, Cell]] = [{"task": r.task, "method": r.method, "family": r.family, "why": r.note}
                                      for r in ranks[ranks["value"].isna()].itertuples()]
    return {"": rows, "Missing cells": missing}


def cost_cells(t: Tables) -> dict[str, list[dict[str, Cell]]]:
    cost, meta = t["cost"]
    return {"": [{
        "method": r.method, "family": r.family,
        "tasks": shown("# (# missing)", r.n_tasks, r.n_missing) if r.n_missing else shown("#", r.n_tasks),
        "training (total)": shown("#", r.train_seconds_total),
        "incl. inner-fold experts": shown("#", r.total_seconds_incl_experts),
        "per fold": shown("#", r.train_seconds_per_fold), "parameters": shown("#", r.params_mean),
        f"time vs {meta['cost_reference']}": shown("#×", r.seconds_ratio),
        "time vs reference, incl. experts": shown("#×", r.seconds_ratio_incl_experts),
        "parameters vs reference": shown("#×", r.params_ratio),
    } for r in cost.itertuples()]}


def gate_cells(t: Tables) -> dict[str, list[dict[str, Cell]]]:
    out = {}
    for method, rows in t["gate_weights"][0].groupby("method", sort=False):
        heading = f"{method}: mean gate weight per expert (test samples; bold = most trusted)"
        out[heading] = []
        for task, cells in rows.groupby("task", sort=False):
            first, top = cells.iloc[0], cells["weight_mean"].max()
            row: dict[str, Cell] = {"task": task}
            row |= {r.expert: shown("# ± #", r.weight_mean, r.weight_sd, bold=r.weight_mean == top)
                    for r in cells.itertuples()}
            row["KL from uniform"] = shown("#", first["kl_from_uniform"])
            row["mean max weight"] = shown("#", first["max_weight"])
            row["folds kept epoch 0"] = shown("#", first["folds_kept_first_epoch"] if first["status"] == "ok"
                                              else math.nan)
            row["gate moved?"] = ("unknown" if pd.isna(first["kl_from_uniform"])
                                  else NO_MOVE if first["near_uniform"] else "yes")
            out[heading].append(row)
    return out


def left_out_cells(t: Tables) -> dict[str, list[dict[str, Cell]]]:
    return {"": [{"task": r.task, "reason": r.reason, "left out": shown("#", r.n), "ids": ", ".join(r.ids)}
                 for r in t["left_out"][0].itertuples()]}


def external_cells(t: Tables) -> dict[str, list[dict[str, Cell]]]:
    """Per (task, cohort): external value and CI, gain (arrow where its CI excludes 0), p, CV value, note."""
    table, meta = t["external"]
    level = round(100 * float(meta["ci_level"]))
    out: dict[str, list[dict[str, Cell]]] = {}
    for (task, cohort), rows in table.groupby(["task", "cohort"], sort=False):
        heading = f"{task} on {cohort} ({int(rows['n_patients'].max())} patients)"
        out[heading] = [{
            "method": r.method, "family": r.family,
            f"external {r.metric} [{level}% CI]": shown("# [#, #]", r.value, r.ci_low, r.ci_high),
            "gain (points)": shown("#" + (" ↑" if r.gain_ci_low > 0 else " ↓" if r.gain_ci_high < 0 else ""),
                                   100 * r.gain),
            "p": shown("#", r.p_value), "CV": shown("#", r.cv_value), "note": r.note or "",
        } for r in rows.itertuples()]
    return out


EXPECTED: dict[str, Callable[[Tables], dict[str, list[dict[str, Cell]]]]] = {
    "benchmark": benchmark_cells, "ranks": ranks_cells, "summary": summary_cells, "cost": cost_cells,
    "gate_weights": gate_cells, "left_out": left_out_cells, "external": external_cells,
}


# ----------------------------------------------------------------------------- tests
def test_every_table_the_report_writes_is_checked():
    assert set(EXPECTED) == set(TABLES)


def wrong_cells(documents: dict[str, str], tables: Tables) -> list[str]:
    """Every cell of the Markdown ``documents`` (table name → text) that does not show its Parquet value."""
    wrong = []
    for name, text in documents.items():
        if stray := re.findall(r"\b(?:nan|none|null)\b", text, re.IGNORECASE):
            wrong.append(f"{name}: {len(stray)} cells say {stray[0]!r}")
        got, want = markdown_sections(text), EXPECTED[name](tables)
        assert list(got) == list(want), name
        for heading, rows in want.items():
            header, *body = got[heading]
            assert set(header) == {c for row in rows for c in row} and len(body) == len(rows), (name, heading)
            for cells, row in zip(body, rows, strict=True):
                for column, text_cell in zip(header, cells, strict=True):
                    if (why := mismatch(text_cell, row[column])) is not None:
                        wrong.append(f"{name} / {heading or '-'} / {cells[0]} / {column}: {why}")
    return wrong


def read_tables(cfg: Config) -> Tables:
    return {n: read_parquet(cfg.layout.table(n), schema=f"table:{n}") for n in TABLES}


def test_every_markdown_cell_shows_its_parquet_value(run):
    cfg, _ = run
    documents = {n: cfg.layout.table(n).with_suffix(".md").read_text() for n in TABLES}
    wrong = wrong_cells(documents, read_tables(cfg))
    assert not wrong, "\n".join(wrong)


def test_headings_name_the_configured_ci_level(run):
    """A 90% CI is not called a 95% one: the benchmark's and ranks' headings follow ``report.ci_level``."""
    cfg, _ = run
    tables = {n: (df, {**meta, "ci_level": 0.9}) for n, (df, meta) in read_tables(cfg).items()}
    meta = tables["ranks"][1]
    docs = render_all({n: df for n, (df, _) in tables.items()}, missing_cells(tables["ranks"][0]), meta)
    wrong = wrong_cells({n: docs[n].markdown for n in ("benchmark", "ranks")}, tables)
    assert not wrong, "\n".join(wrong)
    assert "auroc mean [90% CI]" in docs["benchmark"].markdown and "95%" not in docs["ranks"].markdown


def test_the_run_has_gates_that_moved_stayed_uniform_and_are_missing(run):
    """The run exercises every branch of "gate moved?" (else the cell check would prove little)."""
    cfg, _ = run
    gates = read_parquet(cfg.layout.table("gate_weights"), schema="table:gate_weights")[0].drop_duplicates("task")
    by = gates.set_index("task")
    assert by.loc["brca_idc_ilc", "kl_from_uniform"] > 0.05 and not by.loc["brca_idc_ilc", "near_uniform"]
    assert by.loc["surv_brca", "near_uniform"] and by.loc["surv_brca", "folds_kept_first_epoch"] == 2
    assert pd.isna(by.loc["mut_tp53", "kl_from_uniform"])
    md = cfg.layout.table("gate_weights").with_suffix(".md").read_text()
    assert NO_MOVE in md and "| yes |" in md and "| unknown |" in md
