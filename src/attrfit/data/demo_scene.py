"""The demo's scene: all randomness of one drawn person that is not a label.

Uniforms drawn up front (:func:`sample_scene`) are mapped to label-specific ranges at paint
time, so the random stream never depends on the labels, and changing one label of the same
scene changes only that label's trace (:mod:`attrfit.data.demo_painter`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
CLASSES = {head: list(REFERENCE_COUNTS[head]) for head in HEAD_COLUMNS}  # each head's class names

SKIN = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 30)]
HAIR = [(25, 20, 18), (25, 20, 18), (60, 40, 25), (60, 40, 25), (105, 70, 40), (185, 150, 90)]
PANTS = [(40, 60, 110), (30, 30, 35), (70, 70, 75), (150, 130, 95), (60, 45, 35), (90, 95, 120)]
DARK_SHOES = [(20, 20, 20), (70, 45, 25), (50, 50, 55), (30, 35, 60)]
LIGHT_SHOES = [(200, 200, 200), (170, 170, 165)]  # sneakers: Normal is not always dark
FANCY_SHOES = [(200, 20, 30), (235, 90, 160), (215, 175, 40), (245, 245, 240), (30, 190, 190), (150, 40, 200)]
OFFICE_BAGS = [(25, 20, 20), (80, 50, 25), (30, 35, 65), (60, 60, 60), (110, 30, 30)]
PLASTIC_BAGS = [(240, 240, 235), (205, 225, 245), (245, 240, 185), (245, 205, 215), (210, 240, 205)]
GREY = np.array([205.0, 205.0, 205.0])


@dataclass(frozen=True)
class Scene:
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


def colour(rng: np.random.Generator, lo: float, hi: float) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.uniform(lo, hi, 3))


def pick(palette: list, u: float):
    return palette[min(int(u * len(palette)), len(palette) - 1)]


def jitter(rng: np.random.Generator, base: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in base)


def sample_scene(rng: np.random.Generator) -> Scene:
    n_clutter = int(rng.integers(3, 9))
    clutter = tuple(
        (int(rng.integers(0, 3)), tuple(float(v) for v in rng.random(4)), colour(rng, 20, 235))
        for _ in range(n_clutter)
    )
    return Scene(
        bg=colour(rng, 50, 210),
        floor=colour(rng, 40, 170),
        clutter=clutter,
        u_scale=float(rng.random()),
        u_x=float(rng.random()),
        u_y=float(rng.random()),
        u_width=float(rng.random()),
        skin=jitter(rng, pick(SKIN, rng.random()), 12),
        shirt=colour(rng, 0, 255),
        pants=jitter(rng, pick(PANTS, rng.random()), 15),
        skirt_colour=colour(rng, 30, 230),
        hair=jitter(rng, pick(HAIR, rng.random()), 10),
        u_long_hair=float(rng.random()),
        u_skirt=float(rng.random()),
        grey_noise=float(rng.normal(0.0, 0.1)),
        facing=int(rng.choice([-1, 1])),
        bag_side=int(rng.choice([-1, 1])),
        u_bag=float(rng.random()),
        u_shoe=float(rng.random()),
        u_shoe_light=float(rng.random()),
        u_cantsee=float(rng.random()),
        occluder=colour(rng, 30, 200),
        u_occluder=float(rng.random()),
        u_blur=float(rng.random()),
        u_noise=float(rng.random()),
        u_contrast=float(rng.random()),
        u_jpeg=float(rng.random()),
        brightness=float(rng.uniform(0.85, 1.15)),
        noise_seed=int(rng.integers(0, 2**31)),
    )
