"""Synthetic H&E tissue: a vectorised renderer for the demo (on disk as a TIFF: :mod:`pathfuse.demo.slides`).

The renderer draws what a pathologist would call H&E at a glance — pink stroma with fibres,
purple nuclei, white glass — through a Beer–Lambert stain model: each pixel has a haematoxylin
and an eosin concentration, and RGB = 255·exp(−optical density). Everything is numpy on whole
arrays (smooth random fields are two small matrix products; nuclei sit on a warped, jittered
lattice, so one gather per parameter draws all of them), which is what keeps the whole demo
within seconds.

The appearance knobs (:class:`TissueLook`) are the demo's latent factors, and they were chosen
to live at different spatial scales, so that encoders looking at 64-px and 32-px versions of a
256-px tile see different things:

* ``hue`` — stain colour; survives any downsampling.
* ``density`` — nuclear area fraction; at coarse scale it becomes "how purple".
* ``nucleus_scale`` — nucleus size at a *constant* nuclear area: the mean colour is unchanged,
  only the texture's grain changes, which a 32-px view (4 µm/px) cannot resolve.
* ``tumour`` — fraction of tissue in regions of large, crowded, dark nuclei; only the tiles
  that fall in such a region carry it (a multiple-instance signal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

#: Optical density per unit concentration (R, G, B): haematoxylin (Ruifrok & Johnston) and an
#: eosin vector tuned so that stroma renders near RGB (235, 160, 200).
HAEMATOXYLIN = np.array([0.65, 0.70, 0.29], dtype=np.float32)
EOSIN = np.array([0.155, 0.876, 0.464], dtype=np.float32)
#: Directions in which the ``hue`` factor turns the stain vectors (bluer H, redder E).
#: Both leave the green channel alone, so an encoder that sees only green is blind to ``hue``.
HAEMATOXYLIN_SHIFT = np.array([0.30, 0.0, -0.25], dtype=np.float32)
EOSIN_SHIFT = np.array([0.25, 0.0, -0.30], dtype=np.float32)
HUE_STRENGTH = 0.15
#: How strongly ``density`` darkens nuclei (hyperchromasia) on top of filling the lattice.
DENSITY_DARKENING = 0.25
GLASS_OD = 0.025
TILE_PX = 256


@dataclass(frozen=True)
class TissueLook:
    """Appearance of a piece of tissue, in latent units (0 = typical; about ±2 in use).

    Attributes:
        hue: stain colour shift (bluer haematoxylin and redder eosin for positive values).
        nucleus_scale: log-size of nuclei at constant nuclear area (texture grain only).
        density: nuclear area fraction (more purple for positive values).
        tumour: fraction (0–1) of the tissue in tumour regions.
        inflammation: density (0–1) of lymphocyte clusters.
        eosin: log-intensity of the eosin stain (pale to dense stroma).
        tissue_fraction: fraction (0–1) of the image covered by tissue.
    """

    hue: float = 0.0
    nucleus_scale: float = 0.0
    density: float = 0.0
    tumour: float = 0.0
    inflammation: float = 0.0
    eosin: float = 0.0
    tissue_fraction: float = 0.55


@dataclass(frozen=True)
class _NucleusKind:
    """A population of nuclei: size (µm), lattice fill, darkness and shape variability."""

    radius_um: float
    presence: float
    darkness: float
    elongation: float
    pleomorphism: float


# ----------------------------------------------------------------------------- fields
@lru_cache(maxsize=256)
def _knot_matrix(n_out: int, step_px: float) -> np.ndarray:
    """Rows of Gaussian weights mapping knots every ``step_px`` onto ``n_out`` pixels.

    Rows are normalised to unit L2 norm, so a field built from unit-normal knots has unit
    variance at every pixel. Cached (read-only): thousands of tile images share a few sizes.
    """
    step_px = max(step_px, 1.0)
    n_knots = math.ceil(n_out / step_px) + 3
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) / step_px + 1.0
    weights = np.exp(-0.5 * ((pos[:, None] - np.arange(n_knots, dtype=np.float32)[None, :]) / 0.7) ** 2)
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    weights.flags.writeable = False
    return weights


class SmoothField:
    """A unit-variance Gaussian random field with correlation lengths of about ``step`` px.

    Separable (row weights × knots × column weights), so any band of rows costs two small
    matrix products, and anisotropic fields (stromal fibres) cost the same as isotropic ones.
    """

    def __init__(self, rng: np.random.Generator, height: int, width: int, step_y: float, step_x: float) -> None:
        self.row_weights = _knot_matrix(height, step_y)
        self.col_weights = _knot_matrix(width, step_x)
        self.knots = rng.standard_normal((self.row_weights.shape[1], self.col_weights.shape[1]), dtype=np.float32)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """The field on rows ``start:stop`` (all columns)."""
        return (self.row_weights[start:stop] @ self.knots) @ self.col_weights.T

    def cut(self, fraction: float, offset: np.ndarray | None = None) -> float:
        """Value above which about ``fraction`` of the field (+ ``offset``) lies, from a 4× subsampled grid."""
        coarse = (self.row_weights[::4] @ self.knots) @ self.col_weights[::4].T
        if offset is not None:
            coarse += offset[::4, ::4]
        return float(np.quantile(coarse, 1.0 - min(max(fraction, 0.0), 1.0)))


def _soft_mask(field: np.ndarray, cut: float, softness: float = 0.15) -> np.ndarray:
    """Soft 0–1 mask where ``field`` exceeds ``cut`` (soft edges avoid jagged outlines)."""
    return np.clip((field - cut) / softness + 0.5, 0.0, 1.0)


# ----------------------------------------------------------------------------- nuclei
class _Nuclei:
    """One population of elliptical nuclei on a warped, jittered lattice.

    Each cell of a square lattice (side = radius / 0.3, so nuclear area does not depend on
    size) may hold one nucleus, jittered inside its cell; a smooth displacement field (at most
    ``max_warp`` px) bends the lattice so that rows of nuclei follow the tissue instead of a
    grid. Per-cell ellipse coefficients are drawn once, so painting a pixel costs one gather
    per coefficient.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], um_per_px: float,
                 kind: _NucleusKind, max_warp: float) -> None:
        self.cell = kind.radius_um / um_per_px / 0.3
        self.origin = math.floor(-max_warp / self.cell) - 1
        self.n_y = math.ceil((shape[0] + max_warp) / self.cell) - self.origin + 2
        self.n_x = math.ceil((shape[1] + max_warp) / self.cell) - self.origin + 2
        n_cells = self.n_y * self.n_x
        size = 1.0 + kind.pleomorphism * rng.uniform(-1.0, 1.0, n_cells).astype(np.float32)
        # Axes stay under 0.35 cell so that a nucleus jittered inside its cell is never clipped.
        long_ax = np.minimum(0.3 * size * (1.0 + kind.elongation * rng.random(n_cells, dtype=np.float32)), 0.35)
        short_ax = np.minimum(
            0.3 * size * (1.0 - 0.5 * kind.elongation * rng.random(n_cells, dtype=np.float32)), long_ax
        )
        angle = rng.uniform(0.0, np.pi, n_cells).astype(np.float32)
        self.centre_y = rng.uniform(0.35, 0.65, n_cells).astype(np.float32)
        self.centre_x = rng.uniform(0.35, 0.65, n_cells).astype(np.float32)
        present = rng.random(n_cells, dtype=np.float32) < kind.presence
        self.dark = (kind.darkness * present * rng.uniform(0.8, 1.2, n_cells)).astype(np.float32)
        self.cos_long, self.sin_long = np.cos(angle) / long_ax, np.sin(angle) / long_ax
        self.cos_short, self.sin_short = np.cos(angle) / short_ax, np.sin(angle) / short_ax

    def paint(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Haematoxylin concentration at (warped) pixel coordinates ``ys``, ``xs``."""
        ys, xs = ys / self.cell, xs / self.cell
        cell_y, cell_x = np.floor(ys), np.floor(xs)
        fy, fx = ys - cell_y, xs - cell_x  # position inside the cell, 0–1
        flat = ((cell_y - self.origin) * self.n_x + (cell_x - self.origin)).astype(np.int32)
        dy, dx = fy - self.centre_y[flat], fx - self.centre_x[flat]
        u = dx * self.cos_long[flat] + dy * self.sin_long[flat]
        v = dy * self.cos_short[flat] - dx * self.sin_short[flat]
        inside = np.clip((1.0 - (u * u + v * v)) * 4.0, 0.0, 1.0)
        return inside * self.dark[flat]


# ----------------------------------------------------------------------------- render
def render_tissue(rng: np.random.Generator, height: int, width: int, um_per_px: float,
                  look: TissueLook, centre_bias: float = 0.0) -> np.ndarray:
    """Render an H&E-looking RGB image (uint8, ``height``×``width``×3) at ``um_per_px``.

    The same function draws whole slides and single tile images, so the tile datasets and the
    slides share one visual vocabulary. ``centre_bias`` pulls the tissue towards the middle
    (slides: one main piece rather than crumbs along the edges). All random structure is
    drawn first; the pixels are then painted in bands of rows small enough to stay in the CPU
    cache, which is several times faster than whole-image temporaries.
    """
    shape, px = (height, width), 1.0 / um_per_px  # px = pixels per µm
    bump_y = centre_bias * _bump(height)
    bump_x = _bump(width)
    warp_px = 8.0 * px
    max_warp = 4.0 * warp_px
    fields = {
        "tissue": SmoothField(rng, height, width, 140 * px, 140 * px),
        "holes": SmoothField(rng, height, width, 25 * px, 25 * px),
        "tumour": SmoothField(rng, height, width, 70 * px, 70 * px),
        "along": SmoothField(rng, height, width, 2.5 * px, 30 * px),
        "across": SmoothField(rng, height, width, 30 * px, 2.5 * px),
        "blend": SmoothField(rng, height, width, 60 * px, 60 * px),
        "warp_y": SmoothField(rng, height, width, 40 * px, 40 * px),
        "warp_x": SmoothField(rng, height, width, 40 * px, 40 * px),
        "clusters": SmoothField(rng, height, width, 35 * px, 35 * px),
    }
    tissue_cut = (fields["tissue"].cut(look.tissue_fraction, np.outer(bump_y, bump_x))
                  if look.tissue_fraction < 0.999 else -np.inf)
    tumour_cut = fields["tumour"].cut(look.tumour) if look.tumour > 0.001 else np.inf
    cluster_cut = fields["clusters"].cut(look.inflammation) if look.inflammation > 0.001 else np.inf
    scale = math.exp(0.35 * look.nucleus_scale)
    presence = float(np.clip(0.4 * math.exp(0.35 * look.density), 0.06, 0.95))
    darkening = math.exp(DENSITY_DARKENING * look.density)
    populations = {
        "normal": _Nuclei(
            rng, shape, um_per_px, _NucleusKind(2.6 * scale, presence, 1.25 * darkening, 0.6, 0.12), max_warp
        ),
        "tumour": _Nuclei(rng, shape, um_per_px, _NucleusKind(4.2 * scale, 0.9, 1.7, 0.35, 0.3), max_warp),
        "lymphocyte": _Nuclei(rng, shape, um_per_px, _NucleusKind(2.0, 0.85, 2.0, 0.1, 0.08), max_warp),
    }
    h_vec = HAEMATOXYLIN + HUE_STRENGTH * look.hue * HAEMATOXYLIN_SHIFT
    e_vec = EOSIN + HUE_STRENGTH * look.hue * EOSIN_SHIFT
    eosin_level = 0.53 * math.exp(0.25 * look.eosin)

    out = np.empty((height, width, 3), dtype=np.uint8)
    band = max(1, 65536 // width)
    cols = np.arange(width, dtype=np.float32)[None, :]
    for start in range(0, height, band):
        stop = min(height, start + band)
        rows = np.arange(start, stop, dtype=np.float32)[:, None]
        field = {name: f.rows(start, stop) for name, f in fields.items()}
        tissue_field = field["tissue"] + bump_y[start:stop, None] * bump_x[None, :]
        tissue = _soft_mask(tissue_field, tissue_cut, 0.05) * np.clip(2.6 - field["holes"], 0.0, 1.0)
        tumour = _soft_mask(field["tumour"], tumour_cut)
        # Stroma: eosin with fibres (two anisotropic fields blended by a smooth orientation map).
        blend = 1.0 / (1.0 + np.exp(-4.0 * field["blend"]))
        fibres = blend * field["along"] + (1.0 - blend) * field["across"]
        eosin = eosin_level * np.clip(0.85 + 0.22 * fibres, 0.3, 1.4) * (1.0 - 0.35 * tumour)

        ys = rows + np.clip(field["warp_y"], -4.0, 4.0) * warp_px
        xs = cols + np.clip(field["warp_x"], -4.0, 4.0) * warp_px
        haem = populations["normal"].paint(ys, xs) * (1.0 - tumour)
        # Populations confined to regions are painted only in bands that meet a region.
        if tumour.max() > 0.0:
            np.maximum(haem, populations["tumour"].paint(ys, xs) * tumour, out=haem)
        clusters = _soft_mask(field["clusters"], cluster_cut)
        if clusters.max() > 0.0:
            np.maximum(haem, populations["lymphocyte"].paint(ys, xs) * clusters, out=haem)
        # Chromatin: per-pixel grain inside nuclei (the finest scale; gone after any downsampling).
        haem *= 0.7 + 0.6 * rng.random(haem.shape, dtype=np.float32)
        eosin = eosin * (1.0 - 0.6 * np.clip(haem, 0.0, 1.0)) + 0.08  # nuclei displace cytoplasm
        haem *= tissue
        eosin *= tissue
        glass = GLASS_OD + 0.02 * rng.random(haem.shape, dtype=np.float32)  # scanner noise
        for c in range(3):
            out[start:stop, :, c] = _od_to_uint8(haem * h_vec[c] + eosin * e_vec[c] + glass)
    return out


def _bump(n: int) -> np.ndarray:
    """A Gaussian bump over ``n`` pixels, 1 in the middle, ~0.3 at the ends."""
    position = (np.arange(n, dtype=np.float32) + 0.5) / n - 0.5
    return np.exp(-0.5 * (position / 0.32) ** 2)


def _od_to_uint8(od: np.ndarray) -> np.ndarray:
    """Beer–Lambert: optical density → 8-bit transmitted intensity."""
    np.negative(od, out=od)
    np.exp(od, out=od)
    od *= 255.0
    od += 0.5
    return od.astype(np.uint8)


def downsample2(image: np.ndarray) -> np.ndarray:
    """Halve an RGB image by 2×2 averaging (Pillow's ``reduce``: a box filter, in C)."""
    return np.asarray(Image.fromarray(image).reduce(2))


def upsample2(image: np.ndarray) -> np.ndarray:
    """Double an RGB image with bilinear interpolation (Pillow's C resampler: fast)."""
    height, width = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((2 * width, 2 * height), Image.Resampling.BILINEAR))
