"""Stage 1a: whole-slide images → tile grids at a target resolution.

Modules, one job each: :mod:`cohort` (which slides, ids, shards), :mod:`mpp` (the slide's
resolution and where it came from), :mod:`reader` (OpenSlide access), :mod:`readers` (the
reader seam: protocol, registry, and the JPEG-native reader the embedding stage prefers),
:mod:`tissue` (low-resolution tissue mask), :mod:`grid` (tile grid and tissue fraction per
tile), :mod:`qc` (one picture per slide), :mod:`tiling` (stage entry points ``tile_shard``
and ``index_cohort``). Bad slides raise :class:`errors.SlideError`.
"""
