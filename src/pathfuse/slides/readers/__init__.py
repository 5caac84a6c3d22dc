"""Slide readers by name: the registry behind ``embedding.reader`` (``auto | openslide | jpeg``).

Built-in readers are named by import path and imported on first use, so a machine without
OpenSlide (e.g. a GPU image) can still use the JPEG-native reader, and importing this package
costs nothing. ``auto`` picks ``jpeg`` for a file the JPEG-native reader qualifies
(:func:`pathfuse.slides.readers.tiff_layout.read_layout`) and ``openslide`` for every other.
A new reader implements :class:`~pathfuse.slides.readers.base.SlideSource` (and optionally
:class:`~pathfuse.slides.readers.base.RawTileSource`) in its own module and is added with
:func:`register`, or from an installed package through the entry-point group
``pathfuse.readers`` (``name = "module:Class"``, imported on first use). Config validation
accepts every registered name (:func:`pathfuse.config_schema.section_schema`).
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:  # the registry itself stays free of numpy/PIL: config validation reads its names
    from pathfuse.slides.readers.base import SlideSource

AUTO = "auto"


class ReaderClass(Protocol):
    """A registered reader class: called with a slide's path, it returns the (lazily opening) reader.

    The registry hands out classes, whose constructor is not part of the :class:`SlideSource`
    protocol; this says what every registered class must accept.
    """

    def __call__(self, path: str | os.PathLike[str], /) -> SlideSource:
        """Open (lazily) the slide at ``path``."""
        ...


_READERS: dict[str, str | type] = {
    "openslide": "pathfuse.slides.reader:SlideReader",
    "jpeg": "pathfuse.slides.readers.jpeg:JpegTiffReader",
}


def register(name: str, reader: str | type) -> None:
    """Add a reader class (or its ``"module:Class"`` path) under ``name``; names are unique."""
    if name in _READERS or name == AUTO:
        raise KeyError(f"slide reader {name!r} is registered twice")
    _READERS[name] = reader


def names() -> list[str]:
    """Registered reader names (the values ``embedding.reader`` takes, besides ``auto``)."""
    return sorted(_READERS)


def reader_class(name: str) -> ReaderClass:
    """The class registered as ``name`` (imported on first use)."""
    try:
        target = _READERS[name]
    except KeyError:
        raise KeyError(f"unknown slide reader {name!r}; known: {', '.join([AUTO, *names()])}") from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = _READERS[name] = getattr(importlib.import_module(module), attr)
    return cast("ReaderClass", target)


def choose_reader(path: str | os.PathLike[str], setting: str) -> str:
    """The reader name for ``path`` under ``setting`` (``auto`` decides per file)."""
    if setting != AUTO:
        reader_class(setting)  # unknown names fail here, naming the known ones
        return setting
    from pathfuse.slides.readers.tiff_layout import NotJpegTiled, read_layout

    try:
        read_layout(path)
    except NotJpegTiled:
        return "openslide"
    return "jpeg"


def open_reader(path: str | os.PathLike[str], setting: str = AUTO) -> SlideSource:
    """A reader for ``path``: the one ``setting`` names, or the best that applies for ``auto``."""
    return reader_class(choose_reader(path, setting))(path)


for _plugin in entry_points(group="pathfuse.readers"):  # a lab's own reader, without forking
    register(_plugin.name, _plugin.value)
