"""The start-up check of a run's inputs: refuse visibly unusable inputs before any job starts."""

from __future__ import annotations

import logging

from pathfuse.config import Config, ConfigError
from pathfuse.encoders.sources import cohort_encoders, coverage, is_features_only

log = logging.getLogger(__name__)


def check_inputs_at_start(cfg: Config) -> None:
    """Raise :class:`ConfigError` naming every input that is already visibly unusable.

    Runs the doctor's input checks without torch (:func:`pathfuse.doctor.check_inputs`, the
    code ``pathfuse doctor`` runs too): a BYO folder that does not exist or holds no bags, bags
    of the wrong width, encoders whose bags share no slide, manifest rows naming missing slide
    files, missing label tables or split CSVs. Every FAIL is named with its fix. Slides a
    features-only cohort leaves out are logged once, as one table.
    """
    # Imported here: jobs that build a Planner for their inputs never run this check, and the
    # doctor's table checks pull in pandas and the slide listing.
    from pathfuse.doctor import FAIL, check_inputs, render_table

    rows = check_inputs(cfg, deep=False)
    failed = [r for r in rows if r.status == FAIL]
    if failed:
        raise ConfigError("inputs not usable (`pathfuse doctor` prints the full table):\n" + render_table(failed))
    for cohort in cfg.cohort_ids:
        if is_features_only(cfg, cohort):
            cover = coverage(cfg, cohort, cohort_encoders(cfg, cohort))
            if cover.dropped:
                log.warning("cohort %r: %d slide(s) lack features of some encoder and are left out (the "
                            "slides every encoder has are used):\n%s", cohort, len(cover.dropped), cover.table())
