"""Config keys that were renamed or removed, so that an old config gets a fix, not "unknown key".

The schemas close every object (``additionalProperties: false``); without this table a renamed
key would be reported like a typo. :data:`RETIRED_KEYS` is data: one row per retired key path
(``*`` stands for any one name, e.g. a cohort), found in the project's history of the schemas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RetiredKey:
    """What became of a config key and since which pathfuse version.

    ``renamed_to`` is set when the value moves unchanged to another key (its ``*`` segments take
    the names the old key's ``*`` matched, in order); otherwise the key was removed and
    ``instead`` says what to write (or why nothing replaces it).
    """

    version: str
    renamed_to: str | None = None
    instead: str = ""


RETIRED_KEYS: dict[str, RetiredKey] = {
    "fusion.selection_metric": RetiredKey(
        version="0.1",
        instead=(
            "it was replaced by report.primary_metric.<task>; write report: {primary_metric: {<task>: <metric>}} "
            "(default: the task registry's primary_metric), the one key that picks best_val_expert, "
            "oracle_expert and the reference of every gain"
        ),
    ),
}


def retired_key_message(path: Sequence[str | int], value: object) -> str | None:
    """The fix for a retired config key at ``path`` (holding ``value``), or None if it never existed."""
    parts = [str(p) for p in path]
    for pattern, retired in RETIRED_KEYS.items():
        wanted = pattern.split(".")
        if len(wanted) == len(parts) and all(w in ("*", p) for w, p in zip(wanted, parts, strict=True)):
            old = ".".join(parts)
            if retired.renamed_to is not None:
                names = iter(p for w, p in zip(wanted, parts, strict=True) if w == "*")  # fill the new key's *s
                new = ".".join(next(names) if w == "*" else w for w in retired.renamed_to.split("."))
                return (f"{old} was renamed to {new} in pathfuse {retired.version}; "
                        f"write {new}: {value!r} instead")
            return f"{old} was removed in pathfuse {retired.version}: {retired.instead}"
    return None
