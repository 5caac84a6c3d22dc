"""The JPEG-native reader gives OpenSlide's tiles: PSNR at every read scale, and embeddings.

Slides: the real Aperio file (20x, 240-px RGB-encoded tiles, skipped when ../shared is absent),
generic tifffile pyramids (YCbCr 4:2:0, levels /2), a demo-renderer slide, and a generated 40x
(0.25 µm/px) Aperio-style SVS with a 4x pyramid. Reads are ``read_px`` = ``out_px`` × 1, 2, 4,
8 (DCT scales 1 … 1/8) and one non-power-of-two ratio, on grids offset from the JPEG tiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.slides import needs_shared, psnr, synthetic_image, write_pyramid, write_svs

from pathfuse.slides.reader import SlideReader
from pathfuse.slides.readers.jpeg import JpegTiffReader

MIN_PSNR = 35.0
OUT_PX = 128
#: (read_px, out_px): DCT scales 1, 1/2, 1/4, 1/8, and 1/2 followed by a 232 → 224 px bilinear step.
READS = ((OUT_PX, OUT_PX), (2 * OUT_PX, OUT_PX), (4 * OUT_PX, OUT_PX), (8 * OUT_PX, OUT_PX), (464, 224))


def _slide(kind: str, tmp_path: Path) -> Path:
    if kind == "real_aperio":
        return needs_shared("CMU-1-Small-Region.svs")
    if kind == "generic":
        return write_pyramid(tmp_path / "g.tiff", synthetic_image(2048, 1536, [(0.5, 0.5, 0.4, 0.4)], 0))
    if kind == "demo":
        demo = pytest.importorskip("pathfuse.demo.slides", reason="demo slide renderer not available")
        levels = demo.render_slide(np.random.default_rng(3), 2048, 2048, 0.25, demo.TissueLook(tissue_fraction=0.8))
        demo.write_pyramid_tiff(tmp_path / "d.tiff", levels, 0.25, 80, False)
        return tmp_path / "d.tiff"
    return write_svs(tmp_path / "s40.svs", side=6000, tile=240, min_level_px=300)


def _reads(reader: SlideReader, level: int, read_px: int, n: int = 6) -> list[tuple[int, int]]:
    """Up to ``n`` level-0 positions of a tile grid, starting off the JPEG tile grid (at 8 px)."""
    width, height = reader.level_dimensions[level]
    ds = reader.level_downsamples[level]
    if read_px > min(width, height) - 8:
        return []
    xs = np.linspace(8, width - read_px, n).astype(int) // 8 * 8
    ys = np.linspace(8, height - read_px, n).astype(int)[::-1] // 8 * 8
    return [(int(x * ds), int(y * ds)) for x, y in zip(xs, ys, strict=True)]


@pytest.mark.parametrize("kind", ["real_aperio", "generic", "demo", "aperio_40x"])
def test_tiles_match_openslide_at_every_read_scale(kind, tmp_path):
    path = _slide(kind, tmp_path)
    ours, theirs = JpegTiffReader(path), SlideReader(path)
    worst: dict[tuple[int, int, int], float] = {}
    for level in range(ours.level_count):
        for read_px, out_px in READS:
            for x, y in _reads(theirs, level, read_px):
                read = (x, y, level, read_px, out_px)
                value = psnr(ours.read_tile(*read), theirs.read_tile(*read))
                key = (level, read_px, out_px)
                worst[key] = min(worst.get(key, np.inf), value)
    print(kind, {f"L{lv} {r}->{o}": round(v, 1) for (lv, r, o), v in sorted(worst.items())})
    assert {(r, o) for _, r, o in worst} == set(READS), "every read scale must be exercised"
    assert min(v for (_, r, o), v in worst.items() if r == o) == np.inf  # scale 1: bit-exact
    bad = {k: round(v, 1) for k, v in worst.items() if v < MIN_PSNR}
    assert not bad, f"{kind}: (level, read/out) with PSNR < {MIN_PSNR} dB: {bad}"


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    from pathfuse.compat import import_timm

    timm = import_timm()
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=128).eval()


def _embed(model: torch.nn.Module, tiles: list[np.ndarray]) -> torch.Tensor:
    batch = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        return model((batch - 0.5) / 0.25)


@pytest.mark.parametrize(("kind", "read_px"), [("real_aperio", 512), ("aperio_40x", 512), ("aperio_40x", 1024)])
def test_embeddings_agree_per_tile_far_better_than_neighbours_do(kind, read_px, encoder, tmp_path):
    """Same-tile cosine near 1, and its distance (1 − cosine) far below that of grid neighbours.

    Cosines are of centred embeddings (the mean over the tiles removed): a random-weight ViT
    maps every H&E tile near one direction, so raw cosines of *different* tiles are high too
    and a check on them would pass for any two tiles. Even centred, a random ViT's embedding
    is dominated by a few directions (neighbour cosines reach 0.9), so "far better" is stated
    on distances: the two readers' embeddings of one tile must be ≥ 20x closer than those of
    any two neighbouring tiles.
    """
    path = _slide(kind, tmp_path)
    ours, theirs = JpegTiffReader(path), SlideReader(path)
    width, height = theirs.dimensions
    grid = [(x, y) for y in range(0, height - read_px + 1, read_px) for x in range(0, width - read_px + 1, read_px)]
    pairs = [(ours.read_tile(x, y, 0, read_px, OUT_PX), theirs.read_tile(x, y, 0, read_px, OUT_PX)) for x, y in grid]
    pairs = [p for p in pairs if p[1].std() > 12][:24]  # tissue only: two glass tiles are alike anyway
    assert len(pairs) >= 8
    a, b = _embed(encoder, [p[0] for p in pairs]), _embed(encoder, [p[1] for p in pairs])
    centre = torch.cat([a, b]).mean(0)
    a, b = torch.nn.functional.normalize(a - centre, dim=1), torch.nn.functional.normalize(b - centre, dim=1)
    same = (a * b).sum(1)
    neighbour = (a[:-1] * b[1:]).sum(1)  # row-major grid: the next tile to the right (or next row)
    print(f"{kind} {read_px}->{OUT_PX}: same-tile cosine min {same.min():.6f}, neighbour cosine max "
          f"{neighbour.max():.4f}")
    assert same.min() > 0.99, f"same-tile cosine {same.min():.4f}"
    assert (1 - same.min()) * 20 < 1 - neighbour.max(), (
        f"same-tile cosine {same.min():.6f} is not far above the neighbour cosine {neighbour.max():.4f}")
