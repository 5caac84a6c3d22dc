"""Import timm on a CPU torch when the only torchvision wheel is a CUDA build.

torchvision 0.28.0 on PyPI is built against CUDA torch; with the CPU torch 2.13.0 its import
fails with ``operator torchvision::nms does not exist`` (its meta registrations refer to C++
ops the CPU torch never loaded). timm imports torchvision, so timm fails too. When — and only
when — that exact error occurs, we declare the two missing operator schemas and import again.
Only torchvision's C++ ops (nms, roi_align, ...) stay unavailable; ViT feature extraction and
timm's transforms do not use them. A matching CUDA torch never takes this path.
"""

from __future__ import annotations

import sys
from types import ModuleType

_MISSING_OP = "operator torchvision::nms does not exist"
_fragment = None  # keeps the torch.library fragment alive for the process lifetime


def import_timm() -> ModuleType:
    """Return the ``timm`` module, applying the torchvision work-around if it is needed."""
    try:
        import timm
    except RuntimeError as err:
        if _MISSING_OP not in str(err):
            raise
        _declare_torchvision_ops()
        _forget_modules("torchvision", "timm")
        import timm
    return timm


def _declare_torchvision_ops() -> None:
    global _fragment
    import torch

    if _fragment is None:
        _fragment = torch.library.Library("torchvision", "FRAGMENT")
        _fragment.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _fragment.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")


def _forget_modules(*packages: str) -> None:
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in packages):
            del sys.modules[name]
