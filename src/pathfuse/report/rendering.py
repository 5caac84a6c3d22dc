"""Rendering string tables as Markdown and HTML, and formatting the numbers that go into them.

A view (:mod:`pathfuse.report.markdown`) is a string DataFrame where a winner is wrapped in
``**…**`` and a missing cell is :data:`MISSING`; both renderers read that one form.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

MISSING = "—"
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}"
    "th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}"
    "th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}"
    "tr:nth-child(even) td{background:#fafafa}p.note{color:#555;max-width:60em}"
)


@dataclass(frozen=True)
class Doc:
    """One table rendered twice."""

    markdown: str
    html: str


Section = tuple[str, pd.DataFrame]


# ----------------------------------------------------------------------------- renderers
def markdown_table(view: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a string frame (first column left-aligned)."""
    header = [str(c) for c in view.columns]
    body = [[str(v).replace("|", "\\|") for v in row] for row in view.itertuples(index=False)]
    align = [":--" if i == 0 or _is_text(view.iloc[:, i]) else "--:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _is_text(column: pd.Series) -> bool:
    """A column of words (left-aligned) rather than numbers (right-aligned)."""
    cells = [str(v).strip("*") for v in column if str(v) not in ("", MISSING)]
    return bool(cells) and all(c[:1].isalpha() for c in cells)


def _inline(text: object) -> str:
    """Escape for HTML, turning ``**x**`` into bold."""
    return _BOLD.sub(r"<b>\1</b>", html.escape(str(text)))


def html_table(view: pd.DataFrame) -> str:
    """An HTML table of a string frame; ``**x**`` becomes bold."""
    def cell(value: object, tag: str) -> str:
        return f"<{tag}>{_inline(value)}</{tag}>"

    head = "".join(cell(c, "th") for c in view.columns)
    rows = "".join("<tr>" + "".join(cell(v, "td") for v in row) + "</tr>" for row in view.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def document(title: str, notes: Sequence[str], sections: Sequence[Section]) -> Doc:
    """A titled document: explanatory notes, then one table per section."""
    md = [f"# {title}", "", *[f"{n}\n" for n in notes]]
    body = [f"<h1>{html.escape(title)}</h1>", *[f'<p class="note">{_inline(n)}</p>' for n in notes]]
    for heading, view in sections:
        if heading:
            md += [f"## {heading}", ""]
            body.append(f"<h2>{html.escape(heading)}</h2>")
        md += [markdown_table(view) if len(view) else "_(empty)_", ""]
        body.append(html_table(view) if len(view) else "<p><i>(empty)</i></p>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
    return Doc("\n".join(md).rstrip() + "\n", page)


# ----------------------------------------------------------------------------- formatting
def num(value: float, digits: int = 3) -> str:
    """A number, or the missing mark."""
    return MISSING if value is None or pd.isna(value) else f"{value:.{digits}f}"


def signed_points(value: float) -> str:
    """A metric difference in percentage points (×100) with its sign."""
    return MISSING if pd.isna(value) else f"{100 * value:+.1f}"


def seconds(value: float) -> str:
    """A duration in the unit a reader takes in at a glance: 350 ms, 42.0 s, 3.5 min, 2.1 h."""
    if pd.isna(value):
        return MISSING
    if value < 1:
        return f"{1000 * value:.0f} ms"
    return f"{value:.1f} s" if value < 120 else (f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h")


def ratio(value: float) -> str:
    """A cost ratio: 12×, 1.5×, 0.0048×."""
    if pd.isna(value):
        return MISSING
    return f"{value:.0f}×" if value >= 10 else (f"{value:.1f}×" if value >= 1 else f"{value:.2g}×")


def count(value: float) -> str:
    """A large count (parameters, FLOPs) with an SI suffix: 85.8 M, 1.2 G, 512."""
    if pd.isna(value):
        return MISSING
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f}"


def bold(text: str, flag: bool) -> str:
    """``**text**`` when ``flag`` (a winner), except for the missing mark."""
    return f"**{text}**" if flag and text != MISSING else text
