"""Task kinds, selected by the ``kind`` of a task registry entry.

``KINDS`` maps a kind name to its :class:`TaskKind` subclass. The built-in kinds register on
import; a lab adds its own without forking through the entry-point group ``pathfuse.kinds``
(name = the kind, object = the class), as fusers do with ``pathfuse.fusers``. A plug-in module
should import only :mod:`pathfuse.kinds` (not :mod:`pathfuse.config`, which imports this
package).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from pathfuse.kinds import classification as classification  # registers the built-in kinds
from pathfuse.kinds import survival as survival
from pathfuse.kinds.base import KINDS, KindTraining, LossFn, MonitorFn, TaskFacts, TaskKind, get_kind


def register_plugins() -> None:
    """Register the kinds of the installed ``pathfuse.kinds`` entry points (a lab's own, without forking)."""
    for plugin in entry_points(group="pathfuse.kinds"):
        KINDS.register(plugin.name)(plugin.load())


register_plugins()

__all__ = ["KINDS", "KindTraining", "LossFn", "MonitorFn", "TaskFacts", "TaskKind", "get_kind", "register_plugins"]
