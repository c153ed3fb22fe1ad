"""Training-time augmentation as pure batched tensor ops.

``augment_batch`` takes a whole N x 3 x H x W batch (uint8 or float, 0..255) on the
training device and returns a float batch in 0..255 (float32 unless asked otherwise), same
shape and device; given a model's :class:`Normalise` it returns the model's input instead,
(pixels - mean) / std, made in the same pass. There is no Python loop over samples; every
random draw comes from the ``torch.Generator`` the caller passes, which must live on the
batch's device (``torch.Generator(device=x.device)``), so a run is reproducible from its
seed on a given device.

Order of operations: horizontal flip, translate (with reflected borders; the two are one gather), scale
(zoom about a random point, one batched ``grid_sample``), brightness, contrast, clamp to
0..255, cutout. Cutout squares are filled with the image's own per-channel mean (taken
just before cutout), so the patch carries no information and does not shift the image's
colour statistics the way black would. Flip and translate move uint8 pixels; brightness,
contrast, the normalisation and the conversion to float are one pass, and everything after
it runs in the dtype asked for (bf16 halves the bytes of every full-size pass; docs/experiments/throughput.md).

``mix_batch`` (mixup, cutmix) then mixes a whole augmented batch with a permutation of
itself; the trainer mixes the loss with the same ``lam`` and permutation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from attrfit.core.options import Range, check_fields, option


@dataclass(frozen=True)
class AugmentConfig:
    """What ``augment_batch`` does; the defaults are flip, 4-pixel translate and brightness and contrast 0.2.

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
    brightness: float = option(0.2, "random brightness: factor uniform in [1 - B, 1 + B] per image; 0 = off", "B",
                               Range(0, 1))
    contrast: float = option(0.2, "random contrast about the image mean: factor in [1 - C, 1 + C]; 0 = off", "C",
                             Range(0, 1))
    scale: float = option(0.0, "random zoom per training image: factor uniform in [1 - S, 1 + S] about a random "
                          "point of the image (bilinear; borders reflected); 0 = off", "S", Range(0, 1, hi_open=True))

    def __post_init__(self) -> None:
        check_fields(self, "augment")


@dataclass(frozen=True)
class Normalise:
    """A model's input normalisation, (pixels - mean) / std per channel, for :func:`augment_batch` to make in
    its one float pass; the model then skips its own. Tensors 1 x C x 1 x 1 in 0..255 units, on the batch's
    device (the model's own buffers: read without a host sync, and current after weights are loaded)."""

    mean: Tensor
    std: Tensor


def augment_batch(x: Tensor, cfg: AugmentConfig, gen: torch.Generator, norm: Normalise | None = None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Augment a batch N x 3 x H x W (0..255) into a new ``dtype`` batch in 0..255, or normalised by ``norm``.

    The result has x's shape, device and memory format (NCHW or channels_last).
    ``gen`` must be on ``x.device``. Operations that are switched off draw no random
    numbers, and with everything off the result equals ``x.float()`` (normalised by ``norm``).

    Example:
        >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> out = augment_batch(x, AugmentConfig(cutout=8), torch.Generator().manual_seed(0))
        >>> out.shape, out.dtype
        (torch.Size([8, 3, 32, 32]), torch.float32)
    """
    if gen.device != x.device:
        raise ValueError(f"generator is on {gen.device} but the batch is on {x.device}")
    fmt = _memory_format(x)
    out = _move(x, cfg.flip, cfg.translate, gen)  # pixels only moved: in x's (often uint8) dtype
    if cfg.scale > 0:
        out = _scale(out.to(torch.float32), cfg.scale, gen)
    out = _colour(out, cfg.brightness, cfg.contrast, gen, norm, dtype)  # a new tensor, x untouched
    if x.dtype != torch.uint8 or cfg.scale > 0 or cfg.brightness > 0 or cfg.contrast > 0:
        _clamp(out, norm)  # (uint8 pixels that were only moved cannot leave 0..255)
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


def _colour(x: Tensor, brightness: float, contrast: float, gen: torch.Generator, norm: Normalise | None,
            dtype: torch.dtype) -> Tensor:
    """Brightness (times b), contrast (about the image mean, times c) and ``norm`` as one pass into a new tensor.

    x * bc + b mean (1 - c), then (that - mean_k) / std_k per channel k: one ``addcmul`` with
    N x C x 1 x 1 factors, converting x (uint8 or float) to ``dtype`` as it writes. Draws b,
    then c (each when on), as five separate passes over float images would.
    """
    if x.dtype != torch.uint8:
        x = x.to(torch.float32)  # float32 arithmetic, whatever came in
    scale, shift = _jitter_factors(x, brightness, contrast, gen)
    if norm is not None:
        scale, shift = (1.0 if scale is None else scale) / norm.std, (shift - norm.mean) / norm.std
    out = torch.empty_like(x, dtype=dtype)  # x's layout
    if scale is None:
        return out.copy_(x)
    return torch.addcmul(shift, x, scale, out=out)


def _jitter_factors(x: Tensor, brightness: float, contrast: float,
                    gen: torch.Generator) -> tuple[Tensor | None, Tensor]:
    """(scale, shift) of the jitter as N x 1 x 1 x 1 tensors (scale None and shift 0 when both are off)."""
    zero = torch.zeros((), device=x.device)
    if brightness <= 0 and contrast <= 0:
        return None, zero
    b = _uniform_factor(x, brightness, gen) if brightness > 0 else torch.ones((), device=x.device)
    if contrast <= 0:
        return b, zero
    mean = x.sum(dim=(1, 2, 3), keepdim=True, dtype=torch.float32) / x[0].numel()
    c = _uniform_factor(x, contrast, gen)
    return b * c, b * mean * (1 - c)


def _clamp(x: Tensor, norm: Normalise | None) -> None:
    """Clamp to pixels 0..255 in place; normalised, each channel to where 0 and 255 landed."""
    if norm is None:
        x.clamp_(0.0, 255.0)
        return
    # max then min: on a CPU 3x faster than one clamp to bounds broadcast from tensors
    torch.maximum(x, (-norm.mean / norm.std).to(x.dtype), out=x)
    torch.minimum(x, ((255.0 - norm.mean) / norm.std).to(x.dtype), out=x)


def _move(x: Tensor, flip: bool, t: int, gen: torch.Generator) -> Tensor:
    """Mirror each image left-right (probability 0.5), then shift it by (dy, dx) uniform in [-t, t]^2 with
    reflected borders: one gather of x's pixels (x itself when both are off).

    Draws the mirror flags, then dy, then dx (each when on). A shift needs t < each side: tiny images
    get a smaller one instead of an error.
    """
    n, _, h, w = x.shape
    mirror = torch.rand(n, generator=gen, device=x.device) < 0.5 if flip else None
    t = min(t, h - 1, w - 1)
    if mirror is None and t <= 0:
        return x
    dy = _offsets(n, t, gen, x.device)
    dx = _offsets(n, t, gen, x.device)
    # out[n, c, i, j] = mirrored[n, c, i - dy, j - dx], indices past a border reflected back into the image
    rows = _reflect(torch.arange(h, device=x.device) - dy, h)  # N x H
    cols = _reflect(torch.arange(w, device=x.device) - dx, w)  # N x W
    if mirror is not None:
        cols = torch.where(mirror[:, None], w - 1 - cols, cols)
    # One gather over flattened pixels (~6x faster on CPU than 4-D advanced indexing).
    flat = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w)
    return x.flatten(2).gather(2, flat.expand(n, x.shape[1], h * w)).view(x.shape)


def _offsets(n: int, t: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """N x 1 shifts uniform in [-t, t] (zeros, drawing nothing, for t = 0)."""
    if t <= 0:
        return torch.zeros((n, 1), dtype=torch.long, device=device)
    return torch.randint(-t, t + 1, (n, 1), generator=gen, device=device)


def _reflect(i: Tensor, size: int) -> Tensor:
    """Indices in -(size - 1)..2 (size - 1) reflected into 0..size - 1 as ``F.pad(mode="reflect")`` does.

    Example:
        >>> _reflect(torch.arange(-2, 6), 4).tolist()
        [2, 1, 0, 1, 2, 3, 2, 1]
    """
    i = i.abs()
    return torch.where(i > size - 1, 2 * (size - 1) - i, i)


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


# ---------------------------------------------------------------- mixup and cutmix (whole batches, labels too)

@dataclass(frozen=True)
class Mix:
    """A batch mixed with a permutation of itself; the loss is ``lam * loss(y) + (1 - lam) * loss(y[perm])``."""

    images: Tensor  # float N x 3 x H x W, as the input batch (0..255 or normalised; its dtype and layout)
    perm: Tensor  # N: image i was mixed with image perm[i]
    lam: float  # the share of each image's own labels (mixup: blend weight; cutmix: pixels not pasted over)

    def dominant(self, labels: Tensor) -> Tensor:
        """The labels of the larger share, per row (what a train accuracy can be counted against)."""
        return labels if self.lam >= 0.5 else labels[self.perm]


def mix_batch(x: Tensor, mixup: float, cutmix: float, gen: torch.Generator) -> Mix:
    """Mixup (alpha ``mixup``) or cutmix (alpha ``cutmix``) of a batch (uint8 or float); 0 switches one off.

    Mixes in x's float dtype (uint8 becomes float32), pixels or normalised alike: both are linear.
    One lam per batch from Beta(alpha, alpha). With both on, each batch picks one of the two
    at random (probability 0.5, drawn from ``gen``). Draws, in order: the pick (only when both
    are on), lam, the permutation, cutmix's box centre.

    Example:
        >>> m = mix_batch(torch.zeros(4, 3, 8, 8), 0.4, 0.0, torch.Generator().manual_seed(0))
        >>> m.images.shape, 0 <= m.lam <= 1
        (torch.Size([4, 3, 8, 8]), True)
    """
    if mixup <= 0 and cutmix <= 0:
        raise ValueError("mix_batch needs mixup > 0 or cutmix > 0")
    x = x if x.is_floating_point() else x.to(torch.float32)  # augment_batch's output as it is
    use_cutmix = cutmix > 0 and (mixup <= 0 or bool(torch.rand((), generator=gen, device=x.device) < 0.5))
    lam = sample_beta(cutmix if use_cutmix else mixup, gen)
    perm = torch.randperm(x.shape[0], generator=gen, device=x.device)
    if use_cutmix:
        return _cutmix(x, perm, lam, gen)
    return Mix(torch.lerp(x[perm], x, lam).contiguous(memory_format=_memory_format(x)), perm, lam)


def _cutmix(x: Tensor, perm: Tensor, lam: float, gen: torch.Generator) -> Mix:
    """Paste one box of x[perm] into every image; the box's side ratio is sqrt(1 - lam), its centre uniform,
    clipped at the borders, so lam is recomputed from the area actually pasted."""
    _, _, h, w = x.shape
    ratio = math.sqrt(1.0 - lam)
    bh, bw = round(h * ratio), round(w * ratio)
    cy, cx = (int(torch.randint(0, s, (), generator=gen, device=x.device)) for s in (h, w))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
    out = x.clone()  # keeps x's layout
    out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    return Mix(out, perm, 1.0 - (y1 - y0) * (x1 - x0) / (h * w))


def sample_beta(alpha: float, gen: torch.Generator) -> float:
    """One draw from Beta(alpha, alpha) using only ``gen``: X / (X + Y) for X, Y ~ Gamma(alpha).

    torch's own Beta and Gamma samplers take no generator, so the Gammas are drawn here
    (:func:`_log_gamma`), in log space so that small alphas cannot underflow to 0 / 0.

    Example:
        >>> 0.0 <= sample_beta(0.2, torch.Generator().manual_seed(0)) <= 1.0
        True
    """
    log_x, log_y = _log_gamma(alpha, 2, gen).tolist()
    return 1.0 / (1.0 + math.exp(min(log_y - log_x, 700.0)))  # sigmoid(log X - log Y), never overflowing


def _log_gamma(alpha: float, n: int, gen: torch.Generator, tries: int = 16) -> Tensor:
    """log of n Gamma(alpha, 1) draws (float64): Marsaglia & Tsang (2000), a batch of candidates per round.

    For alpha < 1, Gamma(alpha) = Gamma(alpha + 1) * U ** (1 / alpha) (their section 6). Each
    candidate is accepted with probability >= 0.95, so one round of ``tries`` almost always does.
    """
    dev = gen.device
    a = alpha + 1.0 if alpha < 1.0 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.full((n,), math.nan, dtype=torch.float64, device=dev)
    while bool(out.isnan().any()):
        z = torch.randn(n, tries, generator=gen, device=dev, dtype=torch.float64)
        u = torch.rand(n, tries, generator=gen, device=dev, dtype=torch.float64)
        v = (1.0 + c * z) ** 3
        ok = (v > 0) & (u.log() < 0.5 * z * z + d - d * v + d * v.clamp(min=1e-300).log())
        first = ok.to(torch.int8).argmax(1)  # the first accepted candidate of each row
        found = ok.any(1) & out.isnan()
        out = torch.where(found, (d * v).gather(1, first[:, None]).squeeze(1).log(), out)
    if alpha < 1.0:
        u = 1.0 - torch.rand(n, generator=gen, device=dev, dtype=torch.float64)  # in (0, 1]: a finite log
        out = out + u.log() / alpha
    return out
