"""Image preprocessing in two halves: geometry in the loader workers, normalisation on the device.

The geometric half (resize the shorter side, centre-crop to the encoder's input size) runs per
image in the DataLoader workers on ``uint8`` data — exactly as the encoders' reference
pipelines resize PIL images in uint8 — so batches cross to the device as compact uint8 tensors
(4× less to copy than float32). The normalising half (scale to [0, 1], subtract mean, divide by
std, channels-last) runs batched where the model runs, on the GPU when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pathfuse.encoders.registry import EncoderSpec


@dataclass(frozen=True)
class ResizeCrop:
    """Resize so the shorter side is ``resize_px``, then centre-crop ``crop_px`` (uint8 in/out)."""

    resize_px: int
    crop_px: int
    interpolation: str = "bilinear"

    @classmethod
    def for_encoder(cls, spec: EncoderSpec) -> ResizeCrop:
        """The geometry of an encoder's reference preprocessing (its resize side, input size, filter)."""
        return cls(resize_px=spec.crop_source_px, crop_px=spec.input_px, interpolation=spec.interpolation)

    def __call__(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``image``: uint8 HxWx3 (numpy or tensor) → uint8 3 x crop_px x crop_px tensor."""
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(image if image.flags.writeable else image.copy())
        chw = image.permute(2, 0, 1)
        if chw.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 RGB image, got {chw.dtype}")
        size = self.resized_size(*chw.shape[1:])
        if size != tuple(chw.shape[1:]):
            chw = F.interpolate(chw[None], size=size, mode=self.interpolation, antialias=True,
                                align_corners=False)[0]
        top, left = (round((side - self.crop_px) / 2.0) for side in chw.shape[1:])
        return chw[:, top:top + self.crop_px, left:left + self.crop_px].contiguous()

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize, by torchvision's rule.

        The shorter side becomes ``resize_px`` and the longer side is truncated, so crops land on the
        same pixels as the FMs' reference pipelines.
        """
        if height <= width:
            return self.resize_px, max(self.crop_px, int(self.resize_px * width / height))
        return max(self.crop_px, int(self.resize_px * height / width)), self.resize_px


class Normalize:
    """uint8 NCHW batch → float32 normalised batch on ``device`` (optionally channels-last)."""

    def __init__(self, spec: EncoderSpec, device: torch.device, channels_last: bool) -> None:
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0)
        self.device = device
        self.channels_last = channels_last

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Move a uint8 NCHW batch to the device and normalise it there, in float32."""
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return (batch.float() - self.mean) * self.inv_std
