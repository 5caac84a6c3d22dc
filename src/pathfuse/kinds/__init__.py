"""Task kinds, selected by the ``kind`` of a task registry entry.

``KINDS`` maps a kind name to its :class:`TaskKind` subclass. The built-in kinds register on
import; a lab adds its own without forking through the entry-point group ``pathfuse.kinds``
(name = the kind, object = the class), as fusers do with ``pathfuse.fusers``. A plug-in module
should import only :mod:`pathfuse.kinds` (not :mod:`pathfuse.config`, which imports this
package).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from pathfuse.kinds.base import KindTraining, LossFn, MonitorFn, TaskKind
from pathfuse.registry import Registry

KINDS: Registry[type[TaskKind]] = Registry("task kind")


def get_kind(name: str) -> TaskKind:
    """The strategy of kind ``name``; an unknown name lists the registered ones."""
    return KINDS.get(name)()


# Registration happens on import; keep these after KINDS is defined.
from pathfuse.kinds import classification as classification  # noqa: E402
from pathfuse.kinds import survival as survival  # noqa: E402


def register_plugins() -> None:
    """Register the kinds of the installed ``pathfuse.kinds`` entry points (a lab's own, without forking)."""
    for plugin in entry_points(group="pathfuse.kinds"):
        KINDS.register(plugin.name)(plugin.load())


register_plugins()

__all__ = ["KINDS", "KindTraining", "LossFn", "MonitorFn", "TaskKind", "get_kind", "register_plugins"]
