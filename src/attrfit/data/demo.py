"""The built-in demo dataset: drawn people whose attributes leave visible, imperfect traces.

The real dataset attrfit was built for (hvc_annotations.csv, see ../shared/data/README.md)
cannot be shipped, so ``make_demo`` writes a stand-in with the same schema, the same class
names and the same class frequencies: ``OUT/annotations.csv`` plus ``OUT/resized/N.jpg``.

Every image is a cartoon person painted with PIL; each head leaves a trace that survives
downscaling to 64x64 but is not a perfect tell, and ``label_noise`` of the labels of each
head are then flipped to another class (the true classes are drawn so that the written
labels still follow the reference frequencies), so a small CNN beats the majority baseline
on most heads but cannot reach 100%:

- gender: long hair (85% of women, 12% of men), shoulders wider than hips, skirts (women)
- age: hair goes grey with age (noisy; blonde hair looks grey-ish), the 55+ stoop
- weight: body and limb width
- carryingbag: dark satchel with a cross-body strap / pale plastic bag with handles / none
- footwear: dark rounded shoes / bright pointed shoes with a heel / feet out of frame or
  hidden behind an object (CantSee)
- emotion: mouth (open smile, frown, flat line) and brows (angry: slanted down inward)
- bodypose: front (face, two eyes, collar), side (profile, one eye, nose, narrow body),
  back (hair covers the head, no face)
- imagequality: Good sharp, Average mild blur and noise, Bad strong blur, noise, low
  contrast and a low-quality JPEG round trip

Nuisances: position and scale, skin, clothing, hair and background colours, clutter shapes.
Randomness is drawn per image from ``np.random.default_rng([seed, 0, i])`` (labels from
``[seed, 1]``, label noise from ``[seed, 2]``), so the output is byte-identical for a seed
whatever the number of workers. Everything random about an image that is not a label is
drawn up front into a :class:`_Scene`, so changing one label of the same scene changes only
that label's trace (the tests rely on this).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from attrfit.core import files
from attrfit.core.errors import AttrfitError
from attrfit.core.progress import progress_bar

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Schema and reference frequencies
# ---------------------------------------------------------------------------------------

HEAD_COLUMNS = ["gender", "imagequality", "age", "weight", "carryingbag", "footwear", "emotion", "bodypose"]

# Real class counts of hvc_annotations.csv (13,573 rows), from ../shared/data/README.md,
# each head's classes in the README's order (most frequent first).
REFERENCE_COUNTS: dict[str, dict[str, int]] = {
    "gender": {"male": 7636, "female": 5937},
    "imagequality": {"Average": 7509, "Good": 3824, "Bad": 2240},
    "age": {"25-35": 5411, "35-45": 3435, "15-25": 2494, "45-55": 1490, "55+": 743},
    "weight": {"normal-healthy": 8628, "slightly-overweight": 3196, "over-weight": 891, "underweight": 858},
    "carryingbag": {"None": 7649, "Daily/Office/Work Bag": 4603, "Grocery/Home/Plastic Bag": 1321},
    "footwear": {"Normal": 6038, "CantSee": 5028, "Fancy": 2507},
    "emotion": {"Neutral": 9660, "Happy": 1609, "Angry/Serious": 1500, "Sad": 804},
    "bodypose": {"Front-Frontish": 8383, "Side": 2983, "Back": 2207},
}

CSV_COLUMNS = ["filename", *HEAD_COLUMNS, "image_path"]
JPEG_QUALITY = 90  # fixed, so output bytes depend only on the seed
CSV_NAME = "annotations.csv"
# Above ~0.19 the rarest classes (underweight, 55+) could not keep their reference share
# after noise even if they were never drawn as true labels; see class_probabilities.
MAX_LABEL_NOISE = 0.15
IMAGE_DIR = "resized"
MARKER = ".attrfit-demo"  # marks a folder the demo wrote: it may write there again

_CLASSES = {head: list(REFERENCE_COUNTS[head]) for head in HEAD_COLUMNS}


# ---------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------


def class_probabilities(head: str, label_noise: float = 0.0) -> np.ndarray:
    """Probabilities to draw the *true* classes of ``head`` with, such that after
    ``add_label_noise(rate=label_noise)`` the written labels follow the reference counts.

    Noise moves a share r of each class to the k-1 others uniformly, so the observed share is
    q = p (1 - r) + (1 - p) r / (k - 1); solve for p. Exact while r / (k - 1) < min q, which
    holds for every head up to MAX_LABEL_NOISE.

    >>> class_probabilities("gender").round(3)
    array([0.563, 0.437])
    """
    counts = np.array(list(REFERENCE_COUNTS[head].values()), dtype=np.float64)
    q = counts / counts.sum()
    k, r = len(q), label_noise
    p = (q - r / (k - 1)) / (1 - r - r / (k - 1))
    if (p <= 0).any():
        raise AttrfitError(f"demo: label_noise {label_noise} is too high for the rare classes of {head}")
    return p / p.sum()  # sums to 1 already; guards rounding


def sample_labels(n: int, seed: int, label_noise: float = 0.0) -> np.ndarray:
    """Draw the true (noise-free) classes of ``n`` demo images.

    Returns an int64 array of shape (n, len(HEAD_COLUMNS)): column k holds indices into
    ``list(REFERENCE_COUNTS[HEAD_COLUMNS[k]])``. Heads are independent; the probabilities
    are those of :func:`class_probabilities`, so the labels written after ``label_noise``
    follow the reference frequencies. Prefix-stable: the first rows for ``n=40`` equal
    those for ``n=2000``.

    >>> labels = sample_labels(2000, seed=0)
    >>> labels.shape
    (2000, 8)
    """
    u = np.random.default_rng([seed, 1]).random((n, len(HEAD_COLUMNS)))  # row-major: prefix-stable
    labels = np.empty((n, len(HEAD_COLUMNS)), dtype=np.int64)
    for k, head in enumerate(HEAD_COLUMNS):
        cdf = np.cumsum(class_probabilities(head, label_noise))
        labels[:, k] = np.minimum(np.searchsorted(cdf, u[:, k], side="right"), len(cdf) - 1)
    return labels


def add_label_noise(labels: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Return a copy of ``labels`` (n, heads) where each cell, with probability ``rate``,
    is replaced by a uniformly drawn *other* class of its head.

    >>> noisy = add_label_noise(sample_labels(100, 0), 0.05, seed=0)
    """
    n_classes = np.array([len(_CLASSES[head]) for head in HEAD_COLUMNS])
    u = np.random.default_rng([seed, 2]).random((*labels.shape, 2))
    flip = u[..., 0] < rate
    shift = 1 + np.floor(u[..., 1] * (n_classes - 1)).astype(np.int64)  # in 1..k-1: never the same class
    return np.where(flip, (labels + shift) % n_classes, labels)


# ---------------------------------------------------------------------------------------
# The scene: all randomness of one image that is not a label
# ---------------------------------------------------------------------------------------

_SKIN = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 30)]
_HAIR = [(25, 20, 18), (25, 20, 18), (60, 40, 25), (60, 40, 25), (105, 70, 40), (185, 150, 90)]
_PANTS = [(40, 60, 110), (30, 30, 35), (70, 70, 75), (150, 130, 95), (60, 45, 35), (90, 95, 120)]
_DARK_SHOES = [(20, 20, 20), (70, 45, 25), (50, 50, 55), (30, 35, 60)]
_LIGHT_SHOES = [(200, 200, 200), (170, 170, 165)]  # sneakers: Normal is not always dark
_FANCY_SHOES = [(200, 20, 30), (235, 90, 160), (215, 175, 40), (245, 245, 240), (30, 190, 190), (150, 40, 200)]
_OFFICE_BAGS = [(25, 20, 20), (80, 50, 25), (30, 35, 65), (60, 60, 60), (110, 30, 30)]
_PLASTIC_BAGS = [(240, 240, 235), (205, 225, 245), (245, 240, 185), (245, 205, 215), (210, 240, 205)]
_GREY = np.array([205.0, 205.0, 205.0])


@dataclass(frozen=True)
class _Scene:
    """Nuisance draws of one image. Uniforms in [0, 1) are mapped to label-specific
    ranges at paint time, so the random stream never depends on the labels."""

    bg: tuple[int, int, int]
    floor: tuple[int, int, int]
    clutter: tuple[tuple[int, tuple[float, float, float, float], tuple[int, int, int]], ...]
    u_scale: float
    u_x: float
    u_y: float
    u_width: float
    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    pants: tuple[int, int, int]
    skirt_colour: tuple[int, int, int]
    hair: tuple[int, int, int]
    u_long_hair: float
    u_skirt: float
    grey_noise: float
    facing: int
    bag_side: int
    u_bag: float
    u_shoe: float
    u_shoe_light: float
    u_cantsee: float
    occluder: tuple[int, int, int]
    u_occluder: float
    u_blur: float
    u_noise: float
    u_contrast: float
    u_jpeg: float
    brightness: float
    noise_seed: int


def _colour(rng: np.random.Generator, lo: float, hi: float) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.uniform(lo, hi, 3))


def _pick(palette: list, u: float):
    return palette[min(int(u * len(palette)), len(palette) - 1)]


def _jitter(rng: np.random.Generator, base: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in base)


def _sample_scene(rng: np.random.Generator) -> _Scene:
    n_clutter = int(rng.integers(3, 9))
    clutter = tuple(
        (int(rng.integers(0, 3)), tuple(float(v) for v in rng.random(4)), _colour(rng, 20, 235))
        for _ in range(n_clutter)
    )
    return _Scene(
        bg=_colour(rng, 50, 210),
        floor=_colour(rng, 40, 170),
        clutter=clutter,
        u_scale=float(rng.random()),
        u_x=float(rng.random()),
        u_y=float(rng.random()),
        u_width=float(rng.random()),
        skin=_jitter(rng, _pick(_SKIN, rng.random()), 12),
        shirt=_colour(rng, 0, 255),
        pants=_jitter(rng, _pick(_PANTS, rng.random()), 15),
        skirt_colour=_colour(rng, 30, 230),
        hair=_jitter(rng, _pick(_HAIR, rng.random()), 10),
        u_long_hair=float(rng.random()),
        u_skirt=float(rng.random()),
        grey_noise=float(rng.normal(0.0, 0.1)),
        facing=int(rng.choice([-1, 1])),
        bag_side=int(rng.choice([-1, 1])),
        u_bag=float(rng.random()),
        u_shoe=float(rng.random()),
        u_shoe_light=float(rng.random()),
        u_cantsee=float(rng.random()),
        occluder=_colour(rng, 30, 200),
        u_occluder=float(rng.random()),
        u_blur=float(rng.random()),
        u_noise=float(rng.random()),
        u_contrast=float(rng.random()),
        u_jpeg=float(rng.random()),
        brightness=float(rng.uniform(0.85, 1.15)),
        noise_seed=int(rng.integers(0, 2**31)),
    )


# ---------------------------------------------------------------------------------------
# Painting
# ---------------------------------------------------------------------------------------

# Body half-width as a share of the person's height u, before gender shapes shoulders and hips.
_HALF_WIDTH = {"underweight": 0.095, "normal-healthy": 0.14, "slightly-overweight": 0.185, "over-weight": 0.24}
# Grey share of the hair colour per age (plus the scene's noise).
_GREYNESS = {"15-25": 0.0, "25-35": 0.1, "35-45": 0.32, "45-55": 0.58, "55+": 0.88}


@dataclass(frozen=True)
class _Body:
    """Where the person is, in pixels: u = height, (cx, y0) = centre x and top y."""

    u: float
    cx: float
    y0: float
    chest: float  # half-width at the shoulders
    hip: float  # half-width at the hips
    facing: int  # 0 front/back, +-1 side (looking right/left)

    def y(self, frac: float) -> float:
        return self.y0 + frac * self.u


def _place(scene: _Scene, lab: dict[str, str], h: int, w: int) -> _Body:
    crop_feet = lab["footwear"] == "CantSee" and scene.u_cantsee < 0.5
    if crop_feet:  # a closer shot: the feet (from 0.90u down) fall below the frame
        u = h * (1.12 + 0.18 * scene.u_scale)
        y0 = h * 0.03 * scene.u_y
    else:
        u = h * (0.78 + 0.15 * scene.u_scale)
        y0 = h * 0.02 + (h * 0.97 - u - h * 0.02) * scene.u_y
    if lab["age"] == "55+":  # stoop: a little shorter, head lower
        y0 += 0.04 * u
        u *= 0.96
    cx = w / 2 + (scene.u_x - 0.5) * 0.22 * w
    half = _HALF_WIDTH[lab["weight"]] * u * (0.93 + 0.14 * scene.u_width)
    male = lab["gender"] == "male"
    chest, hip = (half * 1.12, half * 0.92) if male else (half * 0.9, half * 1.05)
    facing = scene.facing if lab["bodypose"] == "Side" else 0
    if facing:  # a profile shows the body's depth, not its width
        chest, hip = chest * 0.62, hip * 0.62
    return _Body(u=u, cx=cx, y0=y0, chest=chest, hip=hip, facing=facing)


def _paint_background(draw: ImageDraw.ImageDraw, scene: _Scene, h: int, w: int) -> None:
    draw.rectangle([0, 0, w, h], fill=scene.bg)
    draw.rectangle([0, int(h * 0.82), w, h], fill=scene.floor)
    for kind, (a, b, c, d), colour in scene.clutter:
        x0, y0 = a * w, b * h
        x1, y1 = x0 + (0.05 + 0.3 * c) * w, y0 + (0.05 + 0.3 * d) * h
        if kind == 0:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        elif kind == 1:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=max(1, int(0.02 * h)))


def _hair_colour(scene: _Scene, age: str) -> tuple[int, int, int]:
    grey = float(np.clip(_GREYNESS[age] + scene.grey_noise, 0.0, 1.0))
    return tuple(int(v) for v in (1 - grey) * np.array(scene.hair, dtype=np.float64) + grey * _GREY)


def _paint_legs_and_feet(draw: ImageDraw.ImageDraw, scene: _Scene, lab: dict[str, str], b: _Body) -> None:
    top, knee, bottom = b.y(0.60), b.y(0.76), b.y(0.915)
    gap = 0.012 * b.u
    if b.facing:  # striding profile: legs apart front and back
        step = 0.05 * b.u
        legs = [(b.cx - b.hip - step, b.cx + 0.2 * b.hip - step), (b.cx - 0.2 * b.hip + step, b.cx + b.hip + step)]
    else:
        legs = [(b.cx - b.hip, b.cx - gap), (b.cx + gap, b.cx + b.hip)]
    for x0, x1 in legs:
        draw.rectangle([x0, top, x1, bottom], fill=scene.pants)
    if lab["gender"] == "female" and scene.u_skirt < 0.4:
        flare = 0.06 * b.u
        skirt = [(b.cx - b.hip, top), (b.cx + b.hip, top), (b.cx + b.hip + flare, knee), (b.cx - b.hip - flare, knee)]
        draw.polygon(skirt, fill=scene.skirt_colour)
        for x0, x1 in legs:  # bare legs below the skirt
            draw.rectangle([x0 + 0.2 * (x1 - x0), knee, x1 - 0.2 * (x1 - x0), bottom], fill=scene.skin)
    fancy = lab["footwear"] == "Fancy"
    if fancy:
        colour = _pick(_FANCY_SHOES, scene.u_shoe)
    else:
        colour = _pick(_LIGHT_SHOES if scene.u_shoe_light < 0.2 else _DARK_SHOES, scene.u_shoe)
    for k, (x0, x1) in enumerate(legs):
        direction = b.facing or (-1 if k == 0 else 1)
        mid = (x0 + x1) / 2
        if fancy:  # pointed toe and a heel block
            toe, heel, sole = mid + direction * 0.09 * b.u, mid - direction * 0.04 * b.u, bottom + 0.035 * b.u
            shoe = [(heel, bottom - 0.01 * b.u), (mid, bottom - 0.02 * b.u), (toe, sole), (heel, sole)]
            draw.polygon(shoe, fill=colour)
            x_a, x_b = sorted((heel, heel + direction * 0.02 * b.u))
            draw.rectangle([x_a, bottom + 0.02 * b.u, x_b, bottom + 0.07 * b.u], fill=colour)
        else:  # rounded, flat
            x_a, x_b = sorted((mid - direction * 0.04 * b.u, mid + direction * 0.08 * b.u))
            draw.ellipse([x_a, bottom - 0.01 * b.u, x_b, bottom + 0.06 * b.u], fill=colour)


def _paint_torso(draw: ImageDraw.ImageDraw, scene: _Scene, lab: dict[str, str], b: _Body) -> None:
    shoulder, waist = b.y(0.27), b.y(0.62)
    arm = (0.05 if b.facing else 0.045) * b.u * (b.chest / (0.15 * b.u)) ** 0.5
    if b.facing:  # one arm, swinging along the side
        sway = b.facing * 0.03 * b.u
        hand = b.y(0.58)
        sleeve = [(b.cx - arm, shoulder), (b.cx + arm, shoulder), (b.cx + arm + sway, hand), (b.cx - arm + sway, hand)]
        draw.polygon(sleeve, fill=scene.shirt)
    trunk = [(b.cx - b.chest, shoulder), (b.cx + b.chest, shoulder), (b.cx + b.hip, waist), (b.cx - b.hip, waist)]
    draw.polygon(trunk, fill=scene.shirt)
    if lab["weight"] in ("slightly-overweight", "over-weight"):  # a belly bulging past the hips
        bulge = 1.08 if lab["weight"] == "over-weight" else 1.0
        belly_x = b.cx + b.facing * 0.3 * b.hip  # in profile it shows in front
        draw.ellipse([belly_x - b.hip * bulge, b.y(0.40), belly_x + b.hip * bulge, b.y(0.64)], fill=scene.shirt)
    r = 0.04 * b.u
    draw.ellipse([b.cx - b.chest - r * 0.3, shoulder, b.cx - b.chest + 2 * r, shoulder + 2 * r], fill=scene.shirt)
    draw.ellipse([b.cx + b.chest - 2 * r, shoulder, b.cx + b.chest + r * 0.3, shoulder + 2 * r], fill=scene.shirt)
    if not b.facing:
        for side in (-1, 1):
            x_in = b.cx + side * b.chest
            x_out = x_in + side * 2 * arm
            out, hand = side * 0.01 * b.u, b.y(0.57)
            sleeve = [(x_in, shoulder + r * 0.5), (x_out, shoulder + r), (x_out + out, hand), (x_in + out, hand)]
            draw.polygon(sleeve, fill=scene.shirt)
            hx = (x_in + x_out) / 2 + side * 0.01 * b.u
            draw.ellipse([hx - arm, b.y(0.57) - arm * 0.5, hx + arm, b.y(0.57) + arm * 1.5], fill=scene.skin)
    if lab["bodypose"] == "Front-Frontish":  # V-neck collar and buttons: seen only from the front
        v = 0.06 * b.u
        draw.polygon([(b.cx - v, shoulder - 1), (b.cx + v, shoulder - 1), (b.cx, shoulder + 1.4 * v)], fill=scene.skin)
        dot = max(1.0, 0.012 * b.u)
        for frac in (0.4, 0.47, 0.54):
            draw.ellipse([b.cx - dot, b.y(frac) - dot, b.cx + dot, b.y(frac) + dot], fill=(20, 20, 20))


def _paint_bag(draw: ImageDraw.ImageDraw, scene: _Scene, lab: dict[str, str], b: _Body) -> None:
    bag = lab["carryingbag"]
    if bag == "None":
        return
    side = scene.bag_side
    reach = b.chest + 0.10 * b.u if not b.facing else b.chest + 0.03 * b.u
    if bag == "Daily/Office/Work Bag":  # dark satchel at the hip, cross-body strap
        colour = _pick(_OFFICE_BAGS, scene.u_bag)
        bw, top, bottom = 0.2 * b.u, b.y(0.47), b.y(0.64)
        x0 = b.cx + side * reach - (bw if side < 0 else 0)
        strap = max(2, int(0.022 * b.u))
        draw.line([(b.cx - side * b.chest * 0.7, b.y(0.28)), (x0 + bw / 2, top)], fill=colour, width=strap)
        draw.rectangle([x0, top, x0 + bw, bottom], fill=colour)
        flap, light = top + 0.05 * b.u, tuple(min(255, c + 60) for c in colour)
        draw.line([(x0, flap), (x0 + bw, flap)], fill=light, width=max(1, strap // 2))
    else:  # pale plastic bag hanging from the hand, wider at the bottom, with handle loops
        colour = _pick(_PLASTIC_BAGS, scene.u_bag)
        top, bottom = b.y(0.6), b.y(0.82)
        mid = b.cx + side * (reach + 0.06 * b.u)
        wt, wb = 0.07 * b.u, 0.11 * b.u
        loop = max(2, int(0.015 * b.u))
        draw.ellipse([mid - wt * 0.7, top - 0.06 * b.u, mid + wt * 0.7, top + 0.04 * b.u], outline=colour, width=loop)
        draw.polygon([(mid - wt, top), (mid + wt, top), (mid + wb, bottom), (mid - wb, bottom)], fill=colour)
        crease = tuple(max(0, c - 45) for c in colour)
        crease_line = [(mid - 0.3 * wt, top + 0.02 * b.u), (mid - 0.5 * wb, bottom - 0.02 * b.u)]
        draw.line(crease_line, fill=crease, width=max(1, loop // 2))


def _paint_mouth(draw: ImageDraw.ImageDraw, emotion: str, x: float, y: float, half: float, R: float) -> None:
    thick = max(1, int(round(0.16 * R)))
    dark = (90, 20, 25)
    if emotion == "Happy":  # open smile: a filled half-disc, the biggest mouth trace
        draw.chord([x - half, y - 0.3 * R, x + half, y + 0.3 * R], 0, 180, fill=dark)
    elif emotion == "Sad":  # frown: the upper half of an ellipse
        draw.arc([x - half, y, x + half, y + 0.5 * R], 200, 340, fill=dark, width=thick)
    elif emotion == "Angry/Serious":  # pressed, thick, narrower line
        draw.line([(x - 0.75 * half, y), (x + 0.75 * half, y)], fill=dark, width=thick + 1)
    else:
        draw.line([(x - half, y), (x + half, y)], fill=dark, width=thick)


def _paint_brows(
    draw: ImageDraw.ImageDraw, emotion: str, eyes: list[tuple[float, int]], y: float, R: float, hair: tuple
) -> None:
    """Brows above each (eye x, direction of the brow's inner end towards the nose)."""
    thick = max(1, int(round(0.14 * R)))
    for ex, inner in eyes:
        outer_x, inner_x = ex - inner * 0.25 * R, ex + inner * 0.22 * R
        if emotion == "Angry/Serious":  # inner ends pulled down
            draw.line([(outer_x, y - 0.12 * R), (inner_x, y + 0.12 * R)], fill=(30, 20, 15), width=thick + 1)
        elif emotion == "Sad":  # inner ends raised
            draw.line([(outer_x, y + 0.08 * R), (inner_x, y - 0.12 * R)], fill=hair, width=thick)
        else:
            draw.line([(outer_x, y), (inner_x, y)], fill=hair, width=thick)


# Emotion also tints the face a little (flushed when angry, pale when sad, rosy when happy):
# a trace that survives downscaling, unlike a 2-pixel mouth, yet overlaps the skin-tone spread.
EMOTION_TINT = {"Angry/Serious": (70, -30, -30), "Sad": (-40, -10, 45), "Happy": (30, 10, -25), "Neutral": (0, 0, 0)}


def _face_colour(skin: tuple, emotion: str) -> tuple:
    return tuple(int(min(255, max(0, c + d))) for c, d in zip(skin, EMOTION_TINT[emotion]))


def _paint_head(draw: ImageDraw.ImageDraw, scene: _Scene, lab: dict[str, str], b: _Body) -> None:
    R = 0.13 * b.u
    hx, hy = b.cx, b.y(0.0) + R
    if lab["age"] == "55+" and b.facing:
        hx += b.facing * 0.04 * b.u
    hair = _hair_colour(scene, lab["age"])
    long_hair = scene.u_long_hair < (0.85 if lab["gender"] == "female" else 0.12)
    pose = lab["bodypose"]
    if pose == "Back":
        draw.ellipse([hx - R, hy - R, hx + R, hy + R], fill=hair)
        if long_hair:  # falls over the back
            draw.rounded_rectangle([hx - 0.95 * R, hy, hx + 0.95 * R, b.y(0.45)], radius=0.4 * R, fill=hair)
        return
    draw.ellipse([hx - R, hy - R, hx + R, hy + R], fill=hair)
    if pose == "Side":
        d = b.facing
        face = [hx - 0.8 * R + d * 0.15 * R, hy - 0.5 * R, hx + 0.8 * R + d * 0.15 * R, hy + 0.98 * R]
        draw.ellipse(face, fill=_face_colour(scene.skin, lab["emotion"]))
        back = hx - d * 0.4 * R  # the back of the head is hair
        draw.ellipse([back - 0.75 * R, hy - 0.95 * R, back + 0.75 * R, hy + 0.35 * R], fill=hair)
        nose = [(hx + d * 0.85 * R, hy - 0.1 * R), (hx + d * 1.18 * R, hy + 0.2 * R), (hx + d * 0.85 * R, hy + 0.3 * R)]
        draw.polygon(nose, fill=_face_colour(scene.skin, lab["emotion"]))
        eye_x = hx + d * 0.5 * R
        eye = max(1.0, 0.12 * R)
        draw.ellipse([eye_x - eye, hy - 0.05 * R - eye, eye_x + eye, hy - 0.05 * R + eye], fill=(20, 20, 20))
        _paint_brows(draw, lab["emotion"], [(eye_x, d)], hy - 0.3 * R, R * 0.7, hair)
        _paint_mouth(draw, lab["emotion"], hx + d * 0.55 * R, hy + 0.5 * R, 0.28 * R, R)
        return
    draw.ellipse([hx - 0.86 * R, hy - 0.5 * R, hx + 0.86 * R, hy + 0.98 * R], fill=_face_colour(scene.skin, lab["emotion"]))
    eye = max(1.0, 0.12 * R)
    eyes = [hx - 0.38 * R, hx + 0.38 * R]
    for ex in eyes:
        draw.ellipse([ex - eye, hy + 0.05 * R - eye, ex + eye, hy + 0.05 * R + eye], fill=(20, 20, 20))
    _paint_brows(draw, lab["emotion"], [(eyes[0], 1), (eyes[1], -1)], hy - 0.22 * R, R, hair)
    _paint_mouth(draw, lab["emotion"], hx, hy + 0.55 * R, 0.5 * R, R)


def _paint_long_hair_behind(draw: ImageDraw.ImageDraw, scene: _Scene, lab: dict[str, str], b: _Body) -> None:
    long_hair = scene.u_long_hair < (0.85 if lab["gender"] == "female" else 0.12)
    if long_hair and lab["bodypose"] != "Back":
        R = 0.13 * b.u
        shift = -b.facing * 0.35 * R
        box = [b.cx + shift - 1.15 * R, b.y(0.0) + R, b.cx + shift + 1.15 * R, b.y(0.42)]
        draw.rounded_rectangle(box, radius=0.4 * R, fill=_hair_colour(scene, lab["age"]))


def _paint_occluder(draw: ImageDraw.ImageDraw, scene: _Scene, lab: dict[str, str], b: _Body, h: int) -> None:
    if lab["footwear"] != "CantSee" or scene.u_cantsee < 0.5:
        return
    top = b.y(0.74 + 0.08 * scene.u_occluder)
    half = (0.3 + 0.25 * scene.u_occluder) * b.u
    draw.rectangle([b.cx - half, top, b.cx + half, h], fill=scene.occluder)  # a bench, a car, a box
    edge = tuple(max(0, c - 50) for c in scene.occluder)
    draw.line([(b.cx - half, top), (b.cx + half, top)], fill=edge, width=max(1, int(0.02 * b.u)))


def _degrade(img: Image.Image, scene: _Scene, quality: str) -> Image.Image:
    """Blur, noise, contrast and JPEG artefacts by image-quality class; amounts scale with
    the image height so the trace survives downscaling."""
    h = img.height
    # Gaussian blur sigma as a share of the height; Good and Average overlap a little, as in real labels.
    blur = {"Good": 0.005 * scene.u_blur, "Average": 0.004 + 0.007 * scene.u_blur, "Bad": 0.013 + 0.012 * scene.u_blur}
    noise = {"Good": 4 * scene.u_noise, "Average": 3 + 6 * scene.u_noise, "Bad": 10 + 12 * scene.u_noise}  # std, 0-255
    contrast = {"Good": 1.0, "Average": 0.95 - 0.1 * scene.u_contrast, "Bad": 0.85 - 0.25 * scene.u_contrast}
    blur, noise, contrast = blur[quality], noise[quality], contrast[quality]
    if blur * h > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(blur * h))
    a = np.asarray(img, dtype=np.float32)
    mean = a.mean()
    a = ((a - mean) * contrast + mean) * scene.brightness
    a += np.random.default_rng(scene.noise_seed).normal(0.0, noise, a.shape).astype(np.float32)
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if quality == "Bad":  # a low-quality JPEG round trip: blocks and ringing
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(8 + 12 * scene.u_jpeg))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def render_person(
    classes: np.ndarray | list[int], rng: np.random.Generator, size: tuple[int, int] = (224, 224)
) -> Image.Image:
    """Paint one demo person with the given true classes (one index per head, in
    ``HEAD_COLUMNS`` order) and return an RGB image of ``size`` = (H, W).

    All nuisance randomness comes from ``rng`` in an order that does not depend on the
    classes, so the same ``rng`` seed with one class changed changes only that trace.

    >>> img = render_person([0, 1, 0, 0, 0, 0, 0, 0], np.random.default_rng(0), (64, 64))
    >>> img.size
    (64, 64)
    """
    h, w = size
    lab = {head: _CLASSES[head][int(c)] for head, c in zip(HEAD_COLUMNS, classes)}
    scene = _sample_scene(rng)
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    body = _place(scene, lab, h, w)
    _paint_background(draw, scene, h, w)
    _paint_long_hair_behind(draw, scene, lab, body)
    _paint_legs_and_feet(draw, scene, lab, body)
    _paint_torso(draw, scene, lab, body)
    _paint_bag(draw, scene, lab, body)
    _paint_head(draw, scene, lab, body)
    _paint_occluder(draw, scene, lab, body, h)
    return _degrade(img, scene, lab["imagequality"])


# ---------------------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------------------


def _check_args(n: int, seed: int, size: tuple[int, int], label_noise: float, workers: int | None) -> None:
    if not isinstance(n, int) or n < 10:
        raise AttrfitError(f"demo: n must be an integer >= 10, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise AttrfitError(f"demo: seed must be a non-negative integer, got {seed!r}")
    if len(size) != 2 or not all(isinstance(s, int) and s >= 16 for s in size):
        raise AttrfitError(f"demo: size must be (height, width) with both integers >= 16, got {size!r}")
    if not 0.0 <= label_noise <= MAX_LABEL_NOISE:
        raise AttrfitError(f"demo: label_noise must be between 0 and {MAX_LABEL_NOISE}, got {label_noise!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise AttrfitError(f"demo: workers must be a positive integer, got {workers!r}")


def _write_image(path: Path, classes: np.ndarray, seed: int, index: int, size: tuple[int, int]) -> None:
    img = render_person(classes, np.random.default_rng([seed, 0, index]), size)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    # never half an image, even on a full disk; no fsync per image (the CSV, written last, is fsynced)
    files.write_bytes(path, buf.getvalue(), "the demo image", durable=False)


def _check_out_dir(out: Path, force: bool) -> None:
    """Write only into a new or empty folder, or over an earlier demo dataset (``force`` allows anything)."""
    csv_path = out / CSV_NAME
    if out.exists() and not out.is_dir():
        raise AttrfitError(f"demo: {out} exists and is not a folder; choose another output folder")
    if force or not out.exists():
        return
    if csv_path.exists():
        raise AttrfitError(f"demo: {csv_path} already exists; use another folder, delete it, or pass force")
    others = sorted(p.name for p in out.iterdir() if p.name != MARKER)
    if others and not (out / MARKER).exists():
        raise AttrfitError(
            f"demo: {out} already holds files ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) that "
            f"the demo did not write, and it would overwrite {IMAGE_DIR}/N.jpg; choose a new or empty folder, "
            "or pass --force to write over them"
        )


def make_demo(
    out_dir: str | Path,
    n: int = 2000,
    seed: int = 0,
    size: tuple[int, int] = (224, 224),
    label_noise: float = 0.05,
    workers: int | None = None,
    progress: bool = False,
    *,
    force: bool = False,
) -> Path:
    """Write OUT_DIR/annotations.csv and OUT_DIR/resized/N.jpg (N = 1..n); return the CSV path.

    Same seed, same arguments -> byte-identical CSV and images, whatever ``workers``.
    The CSV is written last (atomically), so its presence marks a finished dataset; the
    marker file ``.attrfit-demo``, written first, marks a folder the demo may write into
    again. Raises AttrfitError if OUT_DIR/annotations.csv exists, or if OUT_DIR holds
    files the demo did not write, unless ``force``.

    >>> csv_path = make_demo("demo", n=200, size=(64, 64))  # doctest: +SKIP
    """
    size = tuple(size) if isinstance(size, (tuple, list)) else (size,)
    _check_args(n, seed, size, label_noise, workers)
    out = Path(out_dir)
    csv_path = out / CSV_NAME
    _check_out_dir(out, force)
    files.make_folder(out / IMAGE_DIR, "demo image folder")
    files.write_text(out / MARKER, "written by attrfit demo-data; the folder may be written again\n")
    if csv_path.exists():  # force: until the new CSV is written, the folder is an unfinished dataset
        csv_path.unlink()

    true = sample_labels(n, seed, label_noise)
    observed = add_label_noise(true, label_noise, seed)
    workers = workers or min(4, os.cpu_count() or 1)
    log.info("demo: drawing %d images of %dx%d into %s with %d workers", n, size[0], size[1], out, workers)
    # Threads suffice: PIL's filters and JPEG codec release the GIL, and nothing forks a
    # process that may hold torch state.
    bar = progress_bar(total=n, desc="demo images", enabled=progress)
    with ThreadPoolExecutor(max_workers=workers) as pool, bar:
        paths = [out / IMAGE_DIR / f"{i + 1}.jpg" for i in range(n)]
        futures = [pool.submit(_write_image, paths[i], true[i], seed, i, size) for i in range(n)]
        try:
            for future in futures:
                future.result()  # re-raises a worker's exception here
                bar.update(1)
        except BaseException:  # a full disk or Ctrl-C: do not draw the thousands of images still queued
            for future in futures:
                future.cancel()
            raise

    with files.atomic_open(csv_path, "the demo labels", text=True, newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for i in range(n):
            names = [_CLASSES[head][int(c)] for head, c in zip(HEAD_COLUMNS, observed[i])]
            writer.writerow([f"images/Set{1 + i % 4}/{i + 1}.jpg", *names, f"{IMAGE_DIR}/{i + 1}.jpg"])
    log.info("demo: wrote %s (%d rows, label noise %.2f)", csv_path, n, label_noise)
    return csv_path
