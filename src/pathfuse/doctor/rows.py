"""One result row of a preflight check, and the table the doctor prints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pathfuse.config import Config

OK, FAIL, PENDING = "OK", "FAIL", "PENDING"


@dataclass(frozen=True)
class Row:
    """``check`` (family), ``target`` (encoder, cohort, task, file), ``status``, what was found
    (``detail``) and, for a FAIL, the ``fix``."""

    check: str
    target: str
    status: str
    detail: str
    fix: str = ""


def generated_by_run(cfg: Config, path: str | Path) -> bool:
    """True when ``path`` lies under the demo's output folder and the run generates the demo
    itself: such inputs are PENDING before the run, not missing."""
    demo = cfg.section("demo")
    if not demo.get("enabled"):
        return False
    root = Path(demo["out_dir"]).resolve()
    return Path(str(path).split("*")[0].split("{")[0]).resolve().is_relative_to(root)


def render_table(rows: list[Row]) -> str:
    """Fixed-width text table; a FAIL's fix follows on its own indented line."""
    headers = ("status", "check", "target", "detail")
    cells = [(r.status, r.check, r.target, r.detail) for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers[:-1])]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths, strict=True)) + "  " + headers[-1]]
    for row, cell in zip(rows, cells, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(cell[:-1], widths, strict=True)) + "  " + cell[-1])
        if row.fix:
            lines.append(" " * (widths[0] + 2) + "fix: " + row.fix)
    counts = {s: sum(r.status == s for r in rows) for s in (OK, PENDING, FAIL)}
    lines.append(f"{counts[OK]} OK, {counts[PENDING]} PENDING, {counts[FAIL]} FAIL")
    return "\n".join(lines)
