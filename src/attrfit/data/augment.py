"""Training-time augmentation as pure batched tensor ops.

``augment_batch`` takes a whole N x 3 x H x W batch (uint8 or float, 0..255) on the
training device and returns a float32 batch in 0..255, same shape and device. There is
no Python loop over samples; every random draw comes from the ``torch.Generator`` the
caller passes, which must live on the batch's device (``torch.Generator(device=x.device)``),
so a run is reproducible from its seed on a given device.

Order of operations: horizontal flip, translate (reflect pad + per-sample crop), scale
(zoom about a random point, one batched ``grid_sample``), brightness, contrast, clamp to
0..255, cutout. Cutout squares are filled with the
image's own per-channel mean (taken just before cutout), so the patch carries no
information and does not shift the image's colour statistics the way black would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from attrfit.core.options import Range, check_fields, option


@dataclass(frozen=True)
class AugmentConfig:
    """What ``augment_batch`` does; the defaults are flip + 4-pixel translate.

    Example:
        >>> AugmentConfig(cutout=0.25, brightness=0.2).translate
        4
    """

    flip: bool = option(True, "mirror each training image left-right with probability 0.5")
    translate: int = option(4, "max random shift of each training image, in pixels per axis (0 = off)", "PX",
                            Range(0, 256))
    cutout: float = option(0.0, "cutout square per training image: side in pixels if >= 1, fraction of the "
                           "shorter side if < 1; 0 = off", "PX|FRAC", Range(0, 4096))
    cutout_count: int = option(1, "cutout squares per image", "N", Range(0, 64))
    brightness: float = option(0.0, "random brightness: factor uniform in [1 - B, 1 + B] per image; 0 = off", "B",
                               Range(0, 1))
    contrast: float = option(0.0, "random contrast about the image mean: factor in [1 - C, 1 + C]; 0 = off", "C",
                             Range(0, 1))
    scale: float = option(0.0, "random zoom per training image: factor uniform in [1 - S, 1 + S] about a random "
                          "point of the image (bilinear; borders reflected); 0 = off", "S", Range(0, 1, hi_open=True))

    def __post_init__(self) -> None:
        check_fields(self, "augment")


def augment_batch(x: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """Augment a batch N x 3 x H x W (0..255) into a new float32 batch in 0..255.

    The result has x's shape, device and memory format (NCHW or channels_last).
    ``gen`` must be on ``x.device``. Operations that are switched off draw no random
    numbers, and with everything off the result equals ``x.float()``.

    Example:
        >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> out = augment_batch(x, AugmentConfig(cutout=8), torch.Generator().manual_seed(0))
        >>> out.shape, out.dtype
        (torch.Size([8, 3, 32, 32]), torch.float32)
    """
    if gen.device != x.device:
        raise ValueError(f"generator is on {gen.device} but the batch is on {x.device}")
    fmt = _memory_format(x)
    out = x  # flip and translate move pixels only: do them in x's (often uint8) dtype
    if cfg.flip:
        out = _flip(out, gen)
    if cfg.translate > 0:
        out = _translate(out, cfg.translate, gen)
    out = out.to(torch.float32, copy=out is x)  # never hand back (or modify) x itself
    if cfg.scale > 0:
        out = _scale(out, cfg.scale, gen)
    if cfg.brightness > 0:
        out = out * _uniform_factor(out, cfg.brightness, gen)
    if cfg.contrast > 0:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * _uniform_factor(out, cfg.contrast, gen) + mean
    out = out.clamp_(0.0, 255.0)
    side = cutout_side(cfg.cutout, out.shape[2], out.shape[3])
    if side > 0 and cfg.cutout_count > 0:
        out = _cutout(out, side, cfg.cutout_count, gen)
    return out.contiguous(memory_format=fmt)


def _memory_format(x: Tensor) -> torch.memory_format:
    """channels_last for a channels_last batch, else the default (NCHW) layout."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def cutout_side(cutout: float, height: int, width: int) -> int:
    """Square side in pixels for a ``cutout`` setting (0 = off).

    Example:
        >>> cutout_side(0.25, 64, 32), cutout_side(12, 64, 32), cutout_side(0, 64, 32)
        (8, 12, 0)
    """
    if cutout <= 0:
        return 0
    if cutout >= 1:
        return int(cutout)
    return max(1, round(cutout * min(height, width)))


def _uniform_factor(x: Tensor, spread: float, gen: torch.Generator) -> Tensor:
    """N x 1 x 1 x 1 factors uniform in [1 - spread, 1 + spread]."""
    u = torch.rand(x.shape[0], 1, 1, 1, generator=gen, device=x.device)
    return 1.0 + spread * (2.0 * u - 1.0)


def _flip(x: Tensor, gen: torch.Generator) -> Tensor:
    flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def _translate(x: Tensor, t: int, gen: torch.Generator) -> Tensor:
    """Shift each image by (dy, dx) uniform in [-t, t]^2; borders are reflections."""
    n, _, h, w = x.shape
    # Reflect padding needs pad < side; tiny images get a smaller shift instead of an error.
    t = min(t, h - 1, w - 1)
    if t <= 0:
        return x
    padded = F.pad(x, (t, t, t, t), mode="reflect")  # N x C x (H+2t) x (W+2t)
    dy = torch.randint(-t, t + 1, (n, 1), generator=gen, device=x.device)
    dx = torch.randint(-t, t + 1, (n, 1), generator=gen, device=x.device)
    # out[n, c, i, j] = x[n, c, i - dy, j - dx] = padded[n, c, i - dy + t, j - dx + t]
    rows = torch.arange(h, device=x.device) + t - dy  # N x H
    cols = torch.arange(w, device=x.device) + t - dx  # N x W
    # One gather over flattened pixels (~6x faster on CPU than 4-D advanced indexing).
    flat = (rows[:, :, None] * (w + 2 * t) + cols[:, None, :]).view(n, 1, h * w)
    crops = padded.flatten(2).gather(2, flat.expand(n, x.shape[1], h * w))
    return crops.view(x.shape)


def _scale(x: Tensor, spread: float, gen: torch.Generator) -> Tensor:
    """Zoom each float image by z uniform in [1 - spread, 1 + spread] about a point c uniform in the image.

    In grid_sample's coordinates (-1..1 across the image) output point p shows input point
    c + (p - c) / z: the point c stays in place. For z > 1 that is a crop lying inside the
    image (a convex combination of c and the image's corners); for z < 1 the image shrinks
    and the border around it is filled by reflection.
    """
    n = x.shape[0]
    inv = 1.0 / _uniform_factor(x, spread, gen).view(n, 1)  # N x 1: 1 / z
    centre = 2.0 * torch.rand(n, 2, generator=gen, device=x.device) - 1.0  # N x (x, y)
    shift = centre * (1.0 - inv)  # N x 2
    return F.grid_sample(x, zoom_grid(inv, shift, x.shape[2], x.shape[3]), mode="bilinear",
                         padding_mode="reflection", align_corners=False)


def zoom_grid(inv: Tensor, shift: Tensor, height: int, width: int) -> Tensor:
    """``F.affine_grid`` (align_corners=False) of the axis-aligned maps p -> inv * p + shift: N x H x W x 2.

    ``inv`` is N x 1, ``shift`` N x (x, y). Built by broadcasting because the map has no
    rotation: affine_grid's batched matmul takes longer than the sampling itself (8 of 15 ms
    for 128 images of 128x64 on one CPU thread).
    """
    xs = (2.0 * torch.arange(width, device=inv.device) + 1.0) / width - 1.0  # pixel centres in -1..1
    ys = (2.0 * torch.arange(height, device=inv.device) + 1.0) / height - 1.0
    gx = (inv * xs + shift[:, :1])[:, None, :].expand(-1, height, -1)  # N x H x W
    gy = (inv * ys + shift[:, 1:])[:, :, None].expand(-1, -1, width)
    return torch.stack((gx, gy), dim=3)


def _cutout(x: Tensor, side: int, count: int, gen: torch.Generator) -> Tensor:
    """Fill ``count`` squares per image (centres uniform, clipped at borders)."""
    n, _, h, w = x.shape
    fill = x.mean(dim=(2, 3), keepdim=True)  # N x C x 1 x 1, before any square is cut
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    mask = torch.zeros(n, 1, h, w, dtype=torch.bool, device=x.device)
    for _ in range(count):
        y0 = torch.randint(0, h, (n, 1), generator=gen, device=x.device) - side // 2
        x0 = torch.randint(0, w, (n, 1), generator=gen, device=x.device) - side // 2
        in_rows = (ys >= y0) & (ys < y0 + side)  # N x H
        in_cols = (xs >= x0) & (xs < x0 + side)  # N x W
        mask |= (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    return torch.where(mask, fill, x)
