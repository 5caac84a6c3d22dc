"""Where bring-your-own slide features are, which slides they cover, and whether they are usable.

Light on purpose (no torch): the Snakefile plans jobs from these answers and checks them before
any job starts, and ``pathfuse doctor`` runs the same checks. A cohort's slide features come
from one folder of ``<slide_id>.h5`` bags per encoder, configured either directly
(``embedding.byo.slides.<encoder>.<cohort>: <folder>``) or as a TRIDENT job tree
(``cohorts.<cohort>.trident: {root: <job_dir>/20x_256px_0px_overlap, models: {<encoder>: <model>}}``,
read from ``<root>/features_<model>/``).

A cohort with neither ``slides`` nor ``manifest`` is *features-only*: every encoder the run
uses on it must have such a folder, and its slides are those present for **every** encoder (the
intersection); the others are listed once, by name, in :class:`Coverage` and in the metadata of
each imported shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pathfuse import bag_folders
from pathfuse.bag_folders import bag_files
from pathfuse.config import Config, ConfigError, TaskSpec
from pathfuse.encoders import bag_scan
from pathfuse.encoders.bag_scan import BagVerdict
from pathfuse.settings import ByoTileSource

FEATURE_KEYS = bag_scan.FEATURE_KEYS


def slide_source(cfg: Config, encoder: str, cohort: str) -> Path | None:
    """The HDF5 bag folder of (encoder, cohort), or None (then stage 1 computes the features)."""
    return bag_folders.slide_source(cfg.settings, encoder, cohort)


def tile_source(cfg: Config, encoder: str, dataset: str) -> ByoTileSource | None:
    """The configured feature matrix (``path``, ``ids``) for (encoder, dataset), or None."""
    return cfg.settings.embedding.byo.tiles.get(encoder, {}).get(dataset)


def source_key(cfg: Config, encoder: str, cohort: str) -> str:
    """The config key that names (encoder, cohort)'s bag folder, for messages."""
    if cfg.settings.embedding.byo.slides.get(encoder, {}).get(cohort):
        return f"embedding.byo.slides.{encoder}.{cohort}"
    return f"cohorts.{cohort}.trident.models.{encoder}"


def cohort_encoders(cfg: Config, cohort: str) -> list[str]:
    """Encoders of the run's tasks on ``cohort`` (run order): whose slides a features-only cohort has.

    A task's external cohort counts too, with the task's encoders it has features of
    (:func:`external_encoders`).
    """
    return list(dict.fromkeys(
        [e for t in cfg.tasks if t.cohort == cohort for e in t.encoders]
        + [e for t in cfg.tasks for x in t.external if x.cohort == cohort for e in external_encoders(cfg, t, cohort)]))


def external_encoders(cfg: Config, task: TaskSpec, cohort: str) -> list[str]:
    """The task's encoders whose features the external ``cohort`` has or will have.

    A cohort with slides is embedded by every one of them; a features-only cohort has only the
    encoders its TRIDENT tree or ``embedding.byo.slides`` names: the others' experts cannot
    predict it, and the tables say so.
    """
    if not is_features_only(cfg, cohort):
        return list(task.encoders)
    return [e for e in task.encoders if slide_source(cfg, e, cohort) is not None]


def shard_bags(cfg: Config, encoder: str, cohort: str, shard: int) -> dict[str, Path]:
    """Slide id → bag file of one shard of (encoder, cohort): sorted ids split like every cohort.

    A features-only cohort uses the slides every encoder has (:func:`coverage`), so all experts
    of a task see the same slides; a cohort with slide files imports every bag of the folder.
    """
    bags = bag_files(check_folder(cfg, encoder, cohort))
    if is_features_only(cfg, cohort):
        bags = {s: bags[s] for s in coverage(cfg, cohort, cohort_encoders(cfg, cohort)).slide_ids}
    ids = list(bags)
    n_shards = cfg.n_shards(cohort)
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} does not exist: cohort {cohort!r} has {n_shards} shard(s)")
    size, extra = divmod(len(ids), n_shards)  # numpy.array_split's partition, as for slide cohorts
    start = shard * size + min(shard, extra)
    return {s: bags[s] for s in ids[start:start + size + (shard < extra)]}


def is_features_only(cfg: Config, cohort: str) -> bool:
    """A cohort without slide files: its features are imported for every encoder."""
    entry = cfg.settings.cohorts.get(cohort)
    return entry is None or (not entry.slides and not entry.manifest)


@dataclass(frozen=True)
class Coverage:
    """Which slides a cohort's BYO encoders cover: the ids used and those left out, with why."""

    slide_ids: tuple[str, ...]
    dropped: dict[str, str] = field(default_factory=dict)  # slide id → reason

    def table(self) -> str:
        """The left-out slides as one aligned text table (for one log line, not one per slide)."""
        if not self.dropped:
            return ""
        width = max(len(s) for s in self.dropped)
        return "\n".join(f"  {s:<{width}}  {r}" for s, r in sorted(self.dropped.items()))


def coverage(cfg: Config, cohort: str, encoders: list[str]) -> Coverage:
    """The slides of a features-only cohort: those with a usable bag for every encoder.

    A bag is usable when :func:`bag_verdicts` finds it readable, of the registry's width and not
    empty; every other slide is left out with its reasons (no bag, empty bag, bad file), so all
    experts of a task see the same slides. Whether a bad file stops the run instead is the
    start-up check's decision (``embedding.byo.on_bad_file``), not this function's.

    Raises:
        ConfigError: a folder is missing or empty, or the encoders share no usable slide at all.
    """
    verdicts = {e: bag_verdicts(cfg, e, cohort) for e in encoders}
    every = sorted(set().union(*verdicts.values())) if verdicts else []
    usable, dropped = [], {}
    for slide in every:
        reasons = [_left_out_reason(e, verdicts[e].get(slide)) for e in encoders]
        if any(reasons):
            dropped[slide] = "; ".join(r for r in reasons if r)
        else:
            usable.append(slide)
    if encoders and not usable:
        sizes = ", ".join(f"{e}: {len(v)} bags in {slide_source(cfg, e, cohort)}" for e, v in verdicts.items())
        raise ConfigError(f"cohort {cohort!r}: the encoders' BYO feature folders share no slide id with usable "
                          f"features ({sizes}). "
                          "Fix: point every encoder at features of the same slides (file stem = slide id)")
    return Coverage(tuple(usable), dropped)


def _left_out_reason(encoder: str, verdict: BagVerdict | None) -> str:
    """Why one encoder's bag keeps a slide out ("" when it is usable)."""
    if verdict is None:
        return f"no bag for {encoder}"
    if verdict.status == bag_scan.EMPTY:
        return f"empty bag for {encoder}"
    if verdict.status in bag_scan.BAD_FILE:
        return f"unusable bag for {encoder} ({verdict.detail})"
    return ""


def bag_verdicts(cfg: Config, encoder: str, cohort: str, *, deep: bool = False) -> dict[str, BagVerdict]:
    """Slide id → :class:`~pathfuse.encoders.bag_scan.BagVerdict` of every bag of (encoder, cohort)'s folder."""
    folder = check_folder(cfg, encoder, cohort)
    dim = int(cfg.encoder_entry(encoder)["dim"])
    return bag_scan.scan_folder(bag_files(folder), dim, deep=deep,
                                cache_dir=Path(cfg.settings.results_dir) / ".pathfuse")


def bad_file_message(cfg: Config, encoder: str, cohort: str, bad: dict[str, BagVerdict]) -> str:
    """The files a stop names: each bag, its problem, and the two ways out."""
    folder = slide_source(cfg, encoder, cohort)
    widths = {v.width for v in bad.values() if v.status == bag_scan.WRONG_WIDTH}
    if len(bad) == len(bag_files(folder) if folder else {}) and len(widths) == 1 and all(
            v.status == bag_scan.WRONG_WIDTH for v in bad.values()):
        dim = cfg.encoder_entry(encoder)["dim"]
        return (f"encoder {encoder!r}, cohort {cohort!r}: bags in {folder} are {widths.pop()}-d (e.g. "
                f"{folder}/{min(bad)}.h5) but the encoder registry says dim {dim}\nFix: point the encoder at the right "
                f"folder or fix 'dim' of {encoder!r} in the encoder registry")
    shown = "\n".join(f"  {folder}/{s}.h5: {v.status.replace('_', ' ')}: {v.detail}"
                      for s, v in sorted(bad.items())[:20])
    more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
    return (f"encoder {encoder!r}, cohort {cohort!r}: {len(bad)} bag(s) cannot be used:\n{shown}{more}\n"
            "Fix: re-extract these slides (e.g. rerun TRIDENT for them), or delete the files to leave the slides "
            "out, or set embedding.byo.on_bad_file: skip to leave them out and record why")


def check_folder(cfg: Config, encoder: str, cohort: str) -> Path:
    """The bag folder of (encoder, cohort), checked to exist and hold bags; else a ConfigError."""
    folder = slide_source(cfg, encoder, cohort)
    key = source_key(cfg, encoder, cohort)
    if folder is None:
        raise ConfigError(f"cohort {cohort!r} has no slide files, so encoder {encoder!r} needs imported features: "
                          f"set embedding.byo.slides.{encoder}.{cohort} (a folder of <slide_id>.h5) or "
                          f"cohorts.{cohort}.trident.models.{encoder}, or give the cohort 'slides' or 'manifest'")
    if not folder.is_dir():
        raise ConfigError(f"encoder {encoder!r}, cohort {cohort!r}: BYO feature folder {folder} does not exist; "
                          f"fix {key}")
    if not bag_files(folder):
        raise ConfigError(f"encoder {encoder!r}, cohort {cohort!r}: no <slide_id>.h5 bags in {folder}; fix {key} "
                          "(TRIDENT writes them to <job_dir>/<mag>x_<px>px_<overlap>px_overlap/features_<model>/)")
    return folder
