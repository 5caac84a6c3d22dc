"""The base of every settings model, and the JSON Schema ``number`` type.

Defaults live only in the JSON Schemas (src/pathfuse/resources/schemas/); a model is built from
the validated, default-filled config dict, so every field is present and no model repeats a
default. A field that defaults to ``None`` is a key the schema allows to be absent and gives no
default for (tests/settings/test_settings.py checks both rules against the schemas).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict

#: A JSON Schema ``number``: an int stays an int and a float a float, so an attribute equals the
#: raw dict's value bit for bit (``float`` would turn ``min_saturation: 15`` into 15.0, which
#: changes the bytes of metadata written from it).
Number: TypeAlias = int | float


class Settings(BaseModel):
    """Frozen and closed: settings are read, never written, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def per_kind(block: Settings, kind: str, where: str) -> Any:
    """The entry of task kind ``kind`` in a per-kind settings block (``where`` names the block).

    Per-kind blocks (``experts.heads``, ``fusion.logitprod.by_kind``) have one field per built-in
    kind; a kind without an entry (e.g. a plug-in kind) gets an error naming the block and the
    kinds it has, instead of an AttributeError.
    """
    entry = getattr(block, kind, None)
    if entry is None:
        raise KeyError(f"{where} has no entry for task kind {kind!r}; known: {', '.join(type(block).model_fields)}")
    return entry
