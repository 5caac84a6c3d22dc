"""Aperio-style SVS files for benchmarks and tests, written without imagecodecs.

The TCGA case the JPEG-native reader targets: a 40x (0.25 µm/px) or 20x scan, pyramid levels
stepping by 4, JPEG tiles encoded in RGB (PhotometricInterpretation RGB, components 1, 2, 3 and
no JFIF/Adobe marker, as Aperio writes them), abbreviated tile streams sharing one JPEGTables
tag, and an ``Aperio Image Library … |AppMag = 40|MPP = 0.25`` description, so OpenSlide reads
the file as vendor ``aperio``. Tiles are encoded with Pillow (libjpeg-turbo) and handed to
tifffile as ready segments of a page tagged zlib, then retagged JPEG: tifffile would ask
imagecodecs for a JPEG page even when its segments are ready, and the GPU image has none. A few
tile looks are encoded once and repeated, so a gigapixel-class level takes seconds to write.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

_DQT, _DHT, _SOF0, _SOS = 0xDB, 0xC4, 0xC0, 0xDA
_RGB_IDS = {82: 1, 71: 2, 66: 3}
JPEG = 7  # libjpeg's 'R', 'G', 'B' component ids → Aperio's 1, 2, 3


def tissue_looks(tile: int, n: int = 6, seed: int = 0) -> list[np.ndarray]:
    """Textured H&E-like tiles (stroma with nuclei) and, last, one glass tile.

    Drawn at half resolution and upsampled: a 40x scan is oversampled (optics resolve about
    0.5 µm), so real level-0 pixels carry little energy near Nyquist; white pixel noise would
    make any two resampling filters look more different than they are on slides.
    """
    rng = np.random.default_rng(seed)
    half = tile // 2
    yy, xx = np.mgrid[0:half, 0:half]
    looks = []
    for k in range(n - 1):
        img = np.empty((half, half, 3), np.float32)
        img[:] = (225 - 4 * k, 150 + 3 * k, 195)
        img += rng.normal(0, 8, (half, half, 1))
        count = 30 + 8 * k
        for cx, cy, r in zip(*rng.uniform(0, half, (2, count)), rng.uniform(1.5, 3.5, count), strict=True):
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = (95 + 2 * k, 60, 150)
        small = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        looks.append(np.asarray(small.resize((tile, tile), Image.Resampling.BILINEAR)))
    looks.append(np.clip(243 + rng.normal(0, 1, (tile, tile, 3)), 0, 255).astype(np.uint8))
    return looks


def aperio_jpeg(rgb: np.ndarray, quality: int) -> tuple[bytes, bytes]:
    """(JPEGTables, abbreviated tile stream) of an RGB-encoded tile the way Aperio stores it."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, keep_rgb=True, subsampling=0)
    data = buf.getvalue()
    tables, rest, pos = [], [], 2
    while True:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        segment = bytearray(data[pos:pos + 2 + length])
        if marker in (_SOF0, _SOS):  # rename components R, G, B → 1, 2, 3 (no marker states RGB)
            first, step = (10, 3) if marker == _SOF0 else (5, 2)
            for i in range(segment[first - 1]):
                segment[first + i * step] = _RGB_IDS.get(segment[first + i * step], segment[first + i * step])
        if marker in (_DQT, _DHT):
            tables.append(bytes(segment))
        elif marker not in (0xE0, 0xEE):  # drop JFIF and Adobe markers
            rest.append(bytes(segment))
        if marker == _SOS:
            rest.append(data[pos + 2 + length:])
            break
        pos += 2 + length
    return b"\xff\xd8" + b"".join(tables) + b"\xff\xd9", b"\xff\xd8" + b"".join(rest)


def write_aperio_svs(path: Path, side: int, mpp: float = 0.25, tile: int = 256, step: int = 4,
                     min_level_px: int = 1024, quality: int = 80, seed: int = 0) -> Path:
    """Write a square ``side``-px Aperio-style SVS (levels /``step`` down to ``min_level_px``)."""
    looks = tissue_looks(tile, seed=seed)
    encoded = [aperio_jpeg(img, quality) for img in looks]
    tables = encoded[0][0]
    if any(t != tables for t, _ in encoded):
        raise ValueError("tiles were encoded with different tables")
    streams = [s for _, s in encoded]
    power = round(10 / mpp)
    tmp = path.with_suffix(".partial")
    with tifffile.TiffWriter(tmp, bigtiff=side > 30_000) as tif:
        level, size = 0, side
        while level == 0 or size >= min_level_px:
            n = -(-size // tile)
            rr, cc = np.mgrid[0:n, 0:n]
            inside = ((cc + 0.5) / n - 0.5) ** 2 + ((rr + 0.5) / n - 0.5) ** 2 < 0.16  # one round tissue piece
            pick = np.where(inside, (cc * 7 + rr * 3) % (len(streams) - 1), len(streams) - 1).ravel()
            description = (f"Aperio Image Library v12.0.0 \r\n{side}x{side} ({tile}x{tile}) JPEG/RGB Q={quality}"
                           f"|AppMag = {power}|MPP = {mpp:.4f}") if level == 0 else f"{side}x{side} -> {size}x{size}"
            tif.write(  # tagged zlib (tifffile asks imagecodecs for any JPEG page), retagged JPEG below
                (streams[i] for i in pick), shape=(size, size, 3), dtype=np.uint8, tile=(tile, tile),
                compression="zlib", photometric="rgb", jpegtables=tables, metadata=None, description=description,
                subfiletype=0 if level == 0 else 1,
            )
            level, size = level + 1, size // step
    with tifffile.TiffFile(tmp, mode="r+") as tif:  # a path opened "r+" is opened "r+b"
        for page in tif.pages:
            assert isinstance(page, tifffile.TiffPage)  # pages are frames only with useframes=True
            page.tags["Compression"].overwrite(JPEG)
    os.replace(tmp, path)
    return path
