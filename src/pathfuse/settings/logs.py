"""The ``logging`` section (config.schema.yaml documents each key): what job logs show, never results."""

from __future__ import annotations

from pathfuse.settings.base import Number, Settings


class LoggingSettings(Settings):
    """How often a long job writes a progress line to its log (:mod:`pathfuse.progress`)."""

    progress_interval_s: Number
