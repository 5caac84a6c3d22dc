"""GPU decoding of JPEG-native tiles: workers read bytes, nvJPEG decodes a whole batch on the device.

On a GPU node the CPU-side decode, not the model, bounds embedding throughput (docs/tiling.md,
"Readers"). Here the DataLoader workers only ``pread`` each tile read's compressed JPEG tiles
(:meth:`~pathfuse.slides.readers.jpeg.JpegTiffReader.raw_region`); the main process decodes all
streams of a batch with one ``torchvision.io.decode_jpeg(list, device="cuda")`` call, assembles
each read square, reduces it exactly as the CPU readers do (box by the common power-of-two
factor, then bilinear for the rest), applies the encoder geometry and hands a uint8 batch on
the device to the model.

Any stream nvJPEG refuses is decoded on the CPU instead (libjpeg-turbo); a stream neither can
decode makes its tile fail like any unreadable tile (``embedding.on_tile_error``). RGB-encoded
streams (Aperio) are checked once against the CPU decoder, because not every nvJPEG build
honours the Adobe marker that says "no YCbCr conversion"; if colours differ they stay on the CPU.
This path needs CUDA torchvision image ops and runs only on a GPU; the CPU path is the tested one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pathfuse.settings import EmbeddingSettings
from pathfuse.slides.readers.base import BACKGROUND, RawRegion, reduction_factor
from pathfuse.slides.readers.jpeg_codec import decode

if TYPE_CHECKING:  # only the stage needs these; benchmarks/gpu.sh uses the decoder on its own
    from pathfuse.encoders.slide_tiles import ShardTiles

log = logging.getLogger(__name__)
#: Mean absolute difference (0–255) above which nvJPEG's RGB-stream colours are judged wrong.
COLOUR_TOLERANCE = 2.0


def collate_raw(items: Sequence[tuple[Any, int, bool]]) -> tuple[list[Any], torch.Tensor, torch.Tensor]:
    """Keep payloads (``RawRegion`` or decoded uint8 tensors) as a list; stack index and ok flags."""
    payloads, index, ok = zip(*items, strict=True)
    return list(payloads), torch.tensor(index, dtype=torch.int64), torch.tensor(ok, dtype=torch.bool)


def decoded_batches(dataset: ShardTiles, settings: EmbeddingSettings, device: torch.device
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(uint8 images on device, index, ok)`` per batch, decoding JPEG-native tiles with nvJPEG."""
    from pathfuse.encoders.inference import worker_count
    from pathfuse.encoders.slide_tiles import TileReadError

    dataset.raw = True
    workers = worker_count(settings)
    loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_raw, prefetch_factor=settings.prefetch_factor if workers else None)
    decoder = GpuJpegDecoder(device, dataset.geometry)
    for payloads, index, ok in loader:
        images, decoded = decoder(payloads)
        failed = ok & ~decoded
        if failed.any() and dataset.on_error == "fail":
            raise TileReadError(f"tile {int(index[failed][0])} of the shard could not be decoded; set "
                                "embedding.on_tile_error to drop or zero to go on")
        yield images, index, ok & decoded


class GpuJpegDecoder:
    """Batch of payloads → uint8 [B, 3, S, S] on ``device`` and a per-item decoded flag (CPU bool)."""

    def __init__(self, device: torch.device, geometry: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """``geometry``: the encoder's uint8 HWC → CHW resize/crop (``ResizeCrop``), run on the device."""
        self.device = device
        self.geometry = geometry
        self.rgb_on_gpu: bool | None = None  # decided on the first RGB-encoded stream

    def __call__(self, payloads: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode a batch: raw JPEG regions on the GPU, tensors the workers already decoded as they are.

        A region with an undecodable stream becomes a black square flagged False, so the caller's
        ``on_tile_error`` policy decides whether it is dropped, zero-filled or fatal.
        """
        jobs = [(i, j) for i, p in enumerate(payloads) if isinstance(p, RawRegion)
                for j, s in enumerate(p.streams) if s is not None]
        streams = [payloads[i].streams[j] for i, j in jobs]
        rgb = [payloads[i].rgb_encoded for i, _ in jobs]
        decoded = dict(zip(jobs, self.decode(streams, rgb), strict=True))
        images, ok = [], []
        for i, payload in enumerate(payloads):
            if not isinstance(payload, RawRegion):  # read and decoded by a worker (e.g. OpenSlide slide)
                images.append(payload.to(self.device, non_blocking=True))
                ok.append(True)
                continue
            tiles = [decoded.get((i, j)) for j in range(len(payload.streams))]
            good = all(t is not None for t, s in zip(tiles, payload.streams, strict=True) if s is not None)
            square = self.assemble(payload, tiles) if good else torch.zeros(
                (payload.out_px, payload.out_px, 3), dtype=torch.uint8, device=self.device)
            images.append(self.geometry(square))
            ok.append(good)
        return torch.stack(images), torch.tensor(ok, dtype=torch.bool)

    def decode(self, streams: list[bytes], rgb: list[bool]) -> list[torch.Tensor | None]:
        """CHW uint8 tensors on the device; nvJPEG for the batch, the CPU for what it refuses."""
        from torchvision.io import ImageReadMode, decode_jpeg

        if any(rgb) and self.rgb_on_gpu is None:
            self.rgb_on_gpu = self._gpu_matches_cpu(streams[rgb.index(True)])
        on_gpu = [k for k, is_rgb in enumerate(rgb) if self.rgb_on_gpu or not is_rgb]
        out: list[torch.Tensor | None] = [None] * len(streams)
        data = [torch.frombuffer(bytearray(streams[k]), dtype=torch.uint8) for k in on_gpu]
        try:
            results = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device) if data else []
        except RuntimeError as err:
            log.warning("nvJPEG failed on a batch of %d streams (%s); decoding them one by one", len(data), err)
            results = [self._one_on_gpu(d) for d in data]
        for k, tensor in zip(on_gpu, results, strict=True):
            out[k] = tensor
        for k, tensor in enumerate(out):
            if tensor is None:
                out[k] = self._one_on_cpu(streams[k])
        return out

    def assemble(self, region: RawRegion, tiles: list[torch.Tensor | None]) -> torch.Tensor:
        """The read square as uint8 HWC on the device, reduced as the CPU readers reduce it."""
        width, height = region.canvas
        canvas = torch.tensor(BACKGROUND, dtype=torch.uint8, device=self.device).view(3, 1, 1).repeat(1, height, width)
        for tile, (ox, oy) in zip(tiles, region.origins, strict=True):
            if tile is not None:
                h, w = min(tile.shape[1], height - oy), min(tile.shape[2], width - ox)
                canvas[:, oy:oy + h, ox:ox + w] = tile[:, :h, :w]
        canvas[:, region.valid[1]:] = BACKGROUND[0]
        canvas[:, :, region.valid[0]:] = BACKGROUND[0]
        x0, y0, x1, y1 = region.box
        square = canvas[:, y0:y1, x0:x1].float()[None]
        factor = reduction_factor(x1 - x0, region.out_px)
        if factor > 1:
            square = F.avg_pool2d(square, factor, ceil_mode=True).round()
        if square.shape[-1] != region.out_px:
            square = F.interpolate(square, size=(region.out_px, region.out_px), mode="bilinear", antialias=True,
                                   align_corners=False).round()
        return square[0].clamp(0, 255).to(torch.uint8).permute(1, 2, 0)

    def _gpu_matches_cpu(self, stream: bytes) -> bool:
        gpu, cpu = self._one_on_gpu(torch.frombuffer(bytearray(stream), dtype=torch.uint8)), self._one_on_cpu(stream)
        if gpu is None or cpu is None or gpu.shape != cpu.shape:
            return False
        error = (gpu.float() - cpu.float()).abs().mean().item()
        if error > COLOUR_TOLERANCE:
            log.warning("nvJPEG decodes RGB-encoded JPEG tiles as YCbCr here (mean error %.1f); those tiles are "
                        "decoded on the CPU", error)
        return error <= COLOUR_TOLERANCE

    def _one_on_gpu(self, data: torch.Tensor) -> torch.Tensor | None:
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            return None

    def _one_on_cpu(self, stream: bytes) -> torch.Tensor | None:
        try:
            pixels = decode(stream, 1)
        except (OSError, SyntaxError, ValueError) as err:
            log.warning("a JPEG tile cannot be decoded on the GPU or the CPU: %s", err)
            return None
        return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).to(self.device)
