"""Health of imported HDF5 bags: readable, non-empty, of the registry's width, finite.

A TRIDENT tree from a real cohort is never clean: a killed writer leaves a truncated ``.h5``, a
slide without tissue leaves a bag of 0 tiles, a wrong model folder gives the wrong width. The
start-up check and ``pathfuse doctor`` read every bag's header through :func:`scan_folder`
(``deep``: the doctor also reads the values for NaN/Inf), so each problem is named with its file,
encoder and fix before any job runs — never as h5py's own traceback later.

Verdicts are cached per results folder (``.pathfuse/bag_scan.json``, keyed by path, size and
mtime): the Snakefile runs this check at every start, also inside each cluster job, and a header
read of 3,000 bags costs seconds. Light on purpose (h5py and numpy; no torch).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FEATURE_KEYS = ("features", "feats")
OK, EMPTY, UNREADABLE, WRONG_WIDTH, NON_FINITE = "ok", "empty", "unreadable", "wrong_width", "non_finite"
#: Verdicts that make a file unusable (``embedding.byo.on_bad_file`` decides: stop, or leave the slide out).
BAD_FILE = (UNREADABLE, WRONG_WIDTH)
#: Bumped when what a verdict checks changes, so cached verdicts of an older scan are not reused.
SCAN_VERSION = 1


@dataclass(frozen=True)
class BagVerdict:
    """What one bag file is: ``status`` (:data:`OK`, :data:`EMPTY`, …), its tiles and width, and why."""

    status: str
    n_tiles: int = 0
    width: int = 0
    detail: str = ""
    deep: bool = False  # whether the values were read (NaN/Inf check)


def scan_bag(path: Path, dim: int, *, deep: bool) -> BagVerdict:
    """Open one bag and judge it; never raises for a problem it can name."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            key = next((k for k in FEATURE_KEYS if k in fh), None)
            if key is None:
                return BagVerdict(UNREADABLE, detail=f"no 'features' (or 'feats') dataset; it has {sorted(fh.keys())}",
                                  deep=deep)
            shape = fh[key].shape
            shape = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape  # TRIDENT's leading batch axis
            if len(shape) != 2:
                return BagVerdict(UNREADABLE, detail=f"features have shape {shape}, expected [n_tiles, dim]", deep=deep)
            n_tiles, width = int(shape[0]), int(shape[1])
            if width != dim:
                return BagVerdict(WRONG_WIDTH, n_tiles, width, f"{width}-d features, the encoder registry says {dim}",
                                  deep)
            if n_tiles == 0:
                return BagVerdict(EMPTY, 0, width, "0 tiles", deep)
            if deep:
                values = np.asarray(fh[key]).reshape(n_tiles, width)
                bad = ~np.isfinite(values).all(axis=1)
                if bad.any():
                    rows = np.flatnonzero(bad)
                    return BagVerdict(NON_FINITE, n_tiles, width,
                                      f"{len(rows)} tile(s) with NaN/Inf, e.g. rows {rows[:5].tolist()}", deep)
    except Exception as err:
        return BagVerdict(UNREADABLE, detail=f"{type(err).__name__}: {err}".strip(), deep=deep)
    return BagVerdict(OK, n_tiles, width, "", deep)


def scan_folder(bags: dict[str, Path], dim: int, *, deep: bool, cache_dir: Path | None) -> dict[str, BagVerdict]:
    """Slide id → verdict for every bag of a folder, reusing cached verdicts of unchanged files.

    A cached shallow verdict does not answer a deep scan; a deep one answers both.
    """
    cache_file = cache_dir / "bag_scan.json" if cache_dir is not None else None
    cache = _read_cache(cache_file)
    verdicts: dict[str, BagVerdict] = {}
    changed = False
    for slide, path in bags.items():
        try:
            stat = path.stat()
        except OSError as err:
            verdicts[slide] = BagVerdict(UNREADABLE, detail=str(err), deep=deep)
            continue
        key = f"{path.resolve()}|{dim}"
        entry = cache.get(key)
        if (entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns
                and (entry["verdict"]["deep"] or not deep)):
            verdicts[slide] = BagVerdict(**entry["verdict"])
            continue
        verdicts[slide] = verdict = scan_bag(path, dim, deep=deep)
        cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "verdict": asdict(verdict)}
        changed = True
    if changed and cache_file is not None:
        _write_cache(cache_file, cache)
    return verdicts


def _read_cache(path: Path | None) -> dict[str, dict]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("bags", {}) if data.get("version") == SCAN_VERSION else {}


def _write_cache(path: Path, bags: dict[str, dict]) -> None:
    """Write the cache atomically; a read-only results folder only costs a re-scan next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": SCAN_VERSION, "bags": bags}))
        tmp.replace(path)
    except OSError:
        log.debug("bag scan cache %s not written", path)
