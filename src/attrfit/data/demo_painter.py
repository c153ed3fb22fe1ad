"""The demo's painter: a cartoon person drawn with PIL, each attribute leaving a visible, imperfect trace.

See :mod:`attrfit.data.demo` for the traces each head leaves; :func:`render_person` draws one
person from a label dict and a random generator (the scene's draws come first).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from attrfit.data.demo_scene import (CLASSES, DARK_SHOES, FANCY_SHOES, GREY, HEAD_COLUMNS, LIGHT_SHOES, OFFICE_BAGS,
                                     PLASTIC_BAGS, Scene, pick, sample_scene)


# Body half-width as a share of the person's height u, before gender shapes shoulders and hips.
_HALF_WIDTH = {"underweight": 0.095, "normal-healthy": 0.14, "slightly-overweight": 0.185, "over-weight": 0.24}
# Grey share of the hair colour per age (plus the scene's noise).
GREYNESS = {"15-25": 0.0, "25-35": 0.1, "35-45": 0.32, "45-55": 0.58, "55+": 0.88}


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


def place(scene: Scene, lab: dict[str, str], h: int, w: int) -> _Body:
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


def _paint_background(draw: ImageDraw.ImageDraw, scene: Scene, h: int, w: int) -> None:
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


def _haircolour(scene: Scene, age: str) -> tuple[int, int, int]:
    grey = float(np.clip(GREYNESS[age] + scene.grey_noise, 0.0, 1.0))
    return tuple(int(v) for v in (1 - grey) * np.array(scene.hair, dtype=np.float64) + grey * GREY)


def _paint_legs_and_feet(draw: ImageDraw.ImageDraw, scene: Scene, lab: dict[str, str], b: _Body) -> None:
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
        colour = pick(FANCY_SHOES, scene.u_shoe)
    else:
        colour = pick(LIGHT_SHOES if scene.u_shoe_light < 0.2 else DARK_SHOES, scene.u_shoe)
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


def _paint_torso(draw: ImageDraw.ImageDraw, scene: Scene, lab: dict[str, str], b: _Body) -> None:
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


def _paint_bag(draw: ImageDraw.ImageDraw, scene: Scene, lab: dict[str, str], b: _Body) -> None:
    bag = lab["carryingbag"]
    if bag == "None":
        return
    side = scene.bag_side
    reach = b.chest + 0.10 * b.u if not b.facing else b.chest + 0.03 * b.u
    if bag == "Daily/Office/Work Bag":  # dark satchel at the hip, cross-body strap
        colour = pick(OFFICE_BAGS, scene.u_bag)
        bw, top, bottom = 0.2 * b.u, b.y(0.47), b.y(0.64)
        x0 = b.cx + side * reach - (bw if side < 0 else 0)
        strap = max(2, int(0.022 * b.u))
        draw.line([(b.cx - side * b.chest * 0.7, b.y(0.28)), (x0 + bw / 2, top)], fill=colour, width=strap)
        draw.rectangle([x0, top, x0 + bw, bottom], fill=colour)
        flap, light = top + 0.05 * b.u, tuple(min(255, c + 60) for c in colour)
        draw.line([(x0, flap), (x0 + bw, flap)], fill=light, width=max(1, strap // 2))
    else:  # pale plastic bag hanging from the hand, wider at the bottom, with handle loops
        colour = pick(PLASTIC_BAGS, scene.u_bag)
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


def _facecolour(skin: tuple, emotion: str) -> tuple:
    return tuple(int(min(255, max(0, c + d))) for c, d in zip(skin, EMOTION_TINT[emotion]))


def _paint_head(draw: ImageDraw.ImageDraw, scene: Scene, lab: dict[str, str], b: _Body) -> None:
    R = 0.13 * b.u
    hx, hy = b.cx, b.y(0.0) + R
    if lab["age"] == "55+" and b.facing:
        hx += b.facing * 0.04 * b.u
    hair = _haircolour(scene, lab["age"])
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
        draw.ellipse(face, fill=_facecolour(scene.skin, lab["emotion"]))
        back = hx - d * 0.4 * R  # the back of the head is hair
        draw.ellipse([back - 0.75 * R, hy - 0.95 * R, back + 0.75 * R, hy + 0.35 * R], fill=hair)
        nose = [(hx + d * 0.85 * R, hy - 0.1 * R), (hx + d * 1.18 * R, hy + 0.2 * R), (hx + d * 0.85 * R, hy + 0.3 * R)]
        draw.polygon(nose, fill=_facecolour(scene.skin, lab["emotion"]))
        eye_x = hx + d * 0.5 * R
        eye = max(1.0, 0.12 * R)
        draw.ellipse([eye_x - eye, hy - 0.05 * R - eye, eye_x + eye, hy - 0.05 * R + eye], fill=(20, 20, 20))
        _paint_brows(draw, lab["emotion"], [(eye_x, d)], hy - 0.3 * R, R * 0.7, hair)
        _paint_mouth(draw, lab["emotion"], hx + d * 0.55 * R, hy + 0.5 * R, 0.28 * R, R)
        return
    draw.ellipse([hx - 0.86 * R, hy - 0.5 * R, hx + 0.86 * R, hy + 0.98 * R], fill=_facecolour(scene.skin, lab["emotion"]))
    eye = max(1.0, 0.12 * R)
    eyes = [hx - 0.38 * R, hx + 0.38 * R]
    for ex in eyes:
        draw.ellipse([ex - eye, hy + 0.05 * R - eye, ex + eye, hy + 0.05 * R + eye], fill=(20, 20, 20))
    _paint_brows(draw, lab["emotion"], [(eyes[0], 1), (eyes[1], -1)], hy - 0.22 * R, R, hair)
    _paint_mouth(draw, lab["emotion"], hx, hy + 0.55 * R, 0.5 * R, R)


def _paint_long_hair_behind(draw: ImageDraw.ImageDraw, scene: Scene, lab: dict[str, str], b: _Body) -> None:
    long_hair = scene.u_long_hair < (0.85 if lab["gender"] == "female" else 0.12)
    if long_hair and lab["bodypose"] != "Back":
        R = 0.13 * b.u
        shift = -b.facing * 0.35 * R
        box = [b.cx + shift - 1.15 * R, b.y(0.0) + R, b.cx + shift + 1.15 * R, b.y(0.42)]
        draw.rounded_rectangle(box, radius=0.4 * R, fill=_haircolour(scene, lab["age"]))


def _paint_occluder(draw: ImageDraw.ImageDraw, scene: Scene, lab: dict[str, str], b: _Body, h: int) -> None:
    if lab["footwear"] != "CantSee" or scene.u_cantsee < 0.5:
        return
    top = b.y(0.74 + 0.08 * scene.u_occluder)
    half = (0.3 + 0.25 * scene.u_occluder) * b.u
    draw.rectangle([b.cx - half, top, b.cx + half, h], fill=scene.occluder)  # a bench, a car, a box
    edge = tuple(max(0, c - 50) for c in scene.occluder)
    draw.line([(b.cx - half, top), (b.cx + half, top)], fill=edge, width=max(1, int(0.02 * b.u)))


def _degrade(img: Image.Image, scene: Scene, quality: str) -> Image.Image:
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
    lab = {head: CLASSES[head][int(c)] for head, c in zip(HEAD_COLUMNS, classes)}
    scene = sample_scene(rng)
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    body = place(scene, lab, h, w)
    _paint_background(draw, scene, h, w)
    _paint_long_hair_behind(draw, scene, lab, body)
    _paint_legs_and_feet(draw, scene, lab, body)
    _paint_torso(draw, scene, lab, body)
    _paint_bag(draw, scene, lab, body)
    _paint_head(draw, scene, lab, body)
    _paint_occluder(draw, scene, lab, body, h)
    return _degrade(img, scene, lab["imagequality"])
