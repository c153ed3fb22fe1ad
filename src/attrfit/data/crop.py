"""Stage 3's geometry: one rule turns a region of an image into the model's H x W input.

Training resizes whole images with it (:func:`attrfit.data.cache.resize_image` calls
:func:`crop_resize` with the whole image as the region) and prediction on a detector's boxes
cuts each box with it, so a box's crop is, by construction, what training's resize makes of
the same pixels.

The rule, for a region (a box) of ``bw x bh`` pixels and an output of ``w x h``:

- **stretch**: the region is resized to ``w x h`` (its aspect ratio is not kept).
- **pad**: the region is scaled by ``s = min(w / bw, h / bh)`` to ``round(bw s) x round(bh s)``
  and centred, the left-over margin ``(w - round(bw s)) // 2`` before it, as training's letterbox
  does. The margins show what lies around the region in its image ("context"), where the image
  has pixels; elsewhere they are ``PAD_VALUE`` grey. For a whole image there is nothing around it:
  the margins are all grey, which is training's letterbox, bit for bit.

In both modes, the part of a region that lies outside its image is grey too (a box reaching
past the frame's border keeps its place and scale; nothing is stretched to fill it)::

    frame border
        |
        |  region widened to w:h (pad mode)          output (h x w)
        |  +-----+----------+-----+                   +--+--------+--+
        |  |grey |   box    | ctx |        ->         |g |  box   |c |
        |  +-----+----------+-----+                   +--+--------+--+

Pixels are cut from the image on whole-pixel bounds and then resized with Pillow's bilinear
filter and ``reducing_gap=2`` (the cache's resize); only the part of the region that maps
to fractional pixels of the output is resampled from fractional source coordinates.

Example:
    >>> im = Image.new("RGB", (40, 100), (255, 0, 0))
    >>> np.array(crop_resize(im, Box(10, 20, 10, 40), (32, 16), "pad"))[0, 0].tolist()  # context: red
    [255, 0, 0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

PAD_VALUE = 127  # grey fill for letterboxing ("pad" mode), for what lies outside an image, and transparent pixels
RESAMPLE = Image.Resampling.BILINEAR
REDUCING_GAP = 2.0  # Pillow first shrinks by whole factors while the image is over 2x the target: faster, same look


@dataclass(frozen=True)
class Box:
    """A region of an image in pixels: top-left corner (x, y) and size (w, h), floats allowed.

    >>> Box(0, 0, 4, 2).area
    8.0
    """

    x: float
    y: float
    w: float
    h: float

    @property
    def area(self) -> float:
        return float(self.w * self.h)


@dataclass(frozen=True)
class Placement:
    """Where the region's pixels go on the output: the source rectangle (whole pixels of the image),
    the fractional rectangle inside it that maps exactly onto ``dest`` (output pixels, x0 y0 x1 y1)."""

    source: tuple[int, int, int, int]
    inner: tuple[float, float, float, float]
    dest: tuple[int, int, int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.dest[2] - self.dest[0], self.dest[3] - self.dest[1]


def _axis(start: float, length: float, scaled: int, offset: int, out: int, limit: int,
          context: bool) -> tuple[int, int, float, float, int, int] | None:
    """One axis of :func:`placement`: the box [start, start + length) drawn as ``scaled`` output pixels from
    ``offset``; output pixel u shows image coordinate start + (u - offset) * length / scaled.

    Returns (source lo, source hi, inner lo, inner hi, dest lo, dest hi), or None when no image pixel shows.
    """
    per = length / scaled  # image pixels per output pixel
    lo, hi = (start - offset * per, start + (out - offset) * per) if context else (start, start + length)
    src0, src1 = max(0, math.floor(lo)), min(limit, math.ceil(hi))
    if src0 >= src1:
        return None
    d0 = min(out, max(0, round(offset + (src0 - start) * scaled / length)))
    d1 = min(out, max(0, round(offset + (src1 - start) * scaled / length)))
    if d0 >= d1:
        return None
    # the image coordinates of the output pixels d0..d1, written so that whole numbers stay exact
    i0 = start + (d0 - offset) * length / scaled
    i1 = start + (d1 - offset) * length / scaled
    return src0, src1, max(0.0, i0 - src0), min(float(src1 - src0), i1 - src0), d0, d1


def placement(image_size: tuple[int, int], box: Box, size: tuple[int, int], mode: str,
              context: bool = True) -> Placement | None:
    """Where ``box`` of an image of ``image_size`` (W, H) lands on an output of ``size`` (H, W); None when
    no pixel of the image shows (the box lies wholly outside it).

    ``context`` (pad mode) fills the margins from the image around the box; without it they stay grey,
    which is what training's letterbox makes of a crop of exactly the box.

    >>> placement((40, 100), Box(0, 0, 40, 100), (128, 64), "pad").dest  # centred: 51 of 64 columns
    (6, 0, 57, 128)
    """
    if box.w <= 0 or box.h <= 0:
        raise ValueError(f"a box needs a positive width and height, got {box.w} x {box.h}")
    h, w = size
    if mode == "stretch":
        sw, sh, ox, oy = w, h, 0, 0
    elif mode == "pad":
        s = min(w / box.w, h / box.h)
        sw, sh = max(1, round(box.w * s)), max(1, round(box.h * s))
        ox, oy = (w - sw) // 2, (h - sh) // 2
    else:
        raise ValueError(f"resize mode '{mode}' unknown")
    ax = _axis(box.x, box.w, sw, ox, w, image_size[0], context and mode == "pad")
    ay = _axis(box.y, box.h, sh, oy, h, image_size[1], context and mode == "pad")
    if ax is None or ay is None:
        return None
    return Placement((ax[0], ay[0], ax[1], ay[1]), (ax[2], ay[2], ax[3], ay[3]), (ax[4], ay[4], ax[5], ay[5]))


def crop_resize(im: Image.Image, box: Box | None, size: tuple[int, int], mode: str,
                context: bool = True) -> Image.Image:
    """The model's input (an RGB image of ``size`` = (H, W)) for region ``box`` of RGB image ``im``
    (None: the whole image, as training resizes it). Raises ValueError when no pixel of ``im`` shows.

    >>> crop_resize(Image.new("RGB", (40, 100)), None, (128, 64), "stretch").size
    (64, 128)
    """
    whole = box is None
    p = placement(im.size, Box(0, 0, im.width, im.height) if whole else box, size, mode, context)
    if p is None:
        raise ValueError(f"the box {box} lies outside the image ({im.width} x {im.height})")
    h, w = size
    src = im if p.source == (0, 0, im.width, im.height) else im.crop(p.source)
    part = src.resize(p.size, RESAMPLE, box=p.inner, reducing_gap=REDUCING_GAP)
    if p.dest == (0, 0, w, h):
        return part
    canvas = Image.new("RGB", (w, h), (PAD_VALUE,) * 3)
    canvas.paste(part, p.dest[:2])
    return canvas


def crop_pixels(im: Image.Image, box: Box, size: tuple[int, int], mode: str, context: bool = True) -> np.ndarray:
    """:func:`crop_resize` as the H x W x 3 uint8 array the model is fed.

    >>> crop_pixels(Image.new("RGB", (40, 100)), Box(5, 5, 10, 20), (32, 16), "pad").shape
    (32, 16, 3)
    """
    return np.asarray(crop_resize(im, box, size, mode, context))
