"""augment_batch: layout and determinism, and what each operation does to each sample."""

import pytest
import torch
import torch.nn.functional as F

from attrfit.data.augment import AugmentConfig, Normalise, augment_batch, cutout_side
from attrfit.core.errors import AttrfitError


def aug(**kw) -> AugmentConfig:
    """An AugmentConfig with the colour jitter off unless given (the default recipe turns it on)."""
    return AugmentConfig(**{"brightness": 0.0, "contrast": 0.0, **kw})

OFF = aug(flip=False, translate=0)


def _noise(n=16, h=32, w=24, seed=0, low=0.0, high=255.0):
    """Continuous-valued images: no two pixels (or shifts of an image) coincide."""
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, 3, h, w, generator=g)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_shape_dtype_device_and_range(dtype):
    x = _noise().to(dtype)
    cfg = aug(cutout=6, brightness=0.5, contrast=0.5)
    out = augment_batch(x, cfg, _gen())
    assert out.shape == x.shape and out.dtype == torch.float32 and out.device == x.device
    assert out.min() >= 0 and out.max() <= 255


def test_channels_last_layout_kept():
    x = _noise().contiguous(memory_format=torch.channels_last)
    out = augment_batch(x, aug(cutout=6), _gen())
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert augment_batch(_noise(), aug(), _gen()).is_contiguous()


def test_seed_determines_output():
    x = _noise()
    cfg = aug(cutout=0.25, cutout_count=2, brightness=0.2, contrast=0.2)
    a, b = augment_batch(x, cfg, _gen(1)), augment_batch(x, cfg, _gen(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, cfg, _gen(2)))


def test_everything_off_is_identity_and_draws_nothing():
    x = _noise().to(torch.uint8)
    g = _gen(3)
    state = g.get_state()
    out = augment_batch(x, OFF, g)
    assert torch.equal(out, x.float())
    assert out.data_ptr() != x.data_ptr()
    assert torch.equal(g.get_state(), state)


def test_flip_gives_input_or_mirror_per_sample():
    x = _noise(n=64)
    out = augment_batch(x, aug(flip=True, translate=0), _gen())
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert torch.all(same | mirrored)
    assert 10 < mirrored.sum() < 54  # p = 0.5: both happen


def _find_shift(out, x, t):
    """The (dy, dx) with out == reflect-padded x shifted by it, or None."""
    h, w = x.shape[-2:]
    padded = F.pad(x[None], (t, t, t, t), mode="reflect")[0]
    for dy in range(-t, t + 1):
        for dx in range(-t, t + 1):
            crop = padded[:, t - dy : t - dy + h, t - dx : t - dx + w]
            if torch.equal(crop, out):
                return dy, dx
    return None


def test_translate_shifts_each_sample_with_reflected_borders():
    t = 3
    x = _noise(n=24)
    out = augment_batch(x, aug(flip=False, translate=t), _gen())
    shifts = [_find_shift(o, xi, t) for o, xi in zip(out, x)]
    assert None not in shifts
    assert len(set(shifts)) > 5  # per-sample shifts, not one for the batch
    dy, dx = next(s for s in shifts if s[0] > 0 and s[1] < 0)
    i = shifts.index((dy, dx))  # interior: out[y, x] = in[y - dy, x - dx]
    assert torch.equal(out[i, :, dy:, : dx], x[i, :, :-dy, -dx:])


def test_translate_larger_than_image_is_limited():
    x = _noise(n=4, h=3, w=5)
    out = augment_batch(x, aug(flip=False, translate=10), _gen())
    assert all(_find_shift(o, xi, 2) is not None for o, xi in zip(out, x))


def test_cutout_side_units():
    assert cutout_side(0.25, 64, 32) == 8
    assert cutout_side(5, 64, 32) == 5
    assert cutout_side(0.001, 64, 32) == 1
    assert cutout_side(0.0, 64, 32) == 0


def test_cutout_fills_one_square_with_image_mean():
    side, x = 6, _noise(n=64)
    out = augment_batch(x, aug(flip=False, translate=0, cutout=side), _gen())
    fill = x.mean(dim=(2, 3), keepdim=True)
    changed = (out != x).any(1)  # N x H x W
    assert torch.all((out == fill).all(1) == changed)  # every changed pixel is the fill
    counts = changed.flatten(1).sum(1)
    assert torch.all((counts >= 1) & (counts <= side * side))
    assert (counts == side * side).sum() > 20  # squares inside the image: exact area
    for mask in changed:  # each changed region is one axis-aligned rectangle
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        assert mask.sum() == len(rows) * len(cols)
        assert rows.max() - rows.min() + 1 == len(rows) <= side


def test_cutout_count_bounds_area():
    side, x = 4, _noise(n=32)
    cfg = aug(flip=False, translate=0, cutout=side, cutout_count=3)
    counts = (augment_batch(x, cfg, _gen()) != x).any(1).flatten(1).sum(1)
    assert torch.all(counts <= 3 * side * side)
    assert counts.max() > side * side


def test_brightness_scales_each_image_within_bounds():
    x = _noise(n=64, low=50, high=150)  # no clamping at factor 1.2
    out = augment_batch(x, aug(flip=False, translate=0, brightness=0.2), _gen())
    ratio = out / x
    per_image = ratio.flatten(1)
    torch.testing.assert_close(per_image.min(1).values, per_image.max(1).values)
    factors = per_image[:, 0]
    assert torch.all((factors >= 0.8 - 1e-5) & (factors <= 1.2 + 1e-5))
    assert factors.max() - factors.min() > 0.2  # varies per sample


def test_contrast_keeps_mean_and_scales_std_within_bounds():
    x = _noise(n=64, low=80, high=170)
    out = augment_batch(x, aug(flip=False, translate=0, contrast=0.3), _gen())
    dims = (1, 2, 3)
    torch.testing.assert_close(out.mean(dims), x.mean(dims), rtol=1e-5, atol=1e-3)
    ratio = out.std(dims) / x.std(dims)
    assert torch.all((ratio >= 0.7 - 1e-4) & (ratio <= 1.3 + 1e-4))
    assert ratio.max() - ratio.min() > 0.3


def test_clamped_to_pixel_range():
    x = torch.full((8, 3, 8, 8), 250.0)
    out = augment_batch(x, aug(flip=False, translate=0, brightness=0.5), _gen())
    assert out.max() == 255.0 and out.min() >= 125.0


def test_bad_config_rejected():
    with pytest.raises(AttrfitError):
        aug(translate=-1)
    with pytest.raises(AttrfitError):
        aug(brightness=1.5)


# ---------------------------------------------------------------- the model's normalisation folded in

NORM = Normalise(torch.tensor([100.0, 120.0, 90.0]).view(1, 3, 1, 1), torch.tensor([50.0, 60.0, 40.0]).view(1, 3, 1, 1))


@pytest.mark.parametrize("kw", [{}, {"brightness": 0.5, "contrast": 0.5}, {"cutout": 6, "brightness": 0.3},
                                {"scale": 0.3, "contrast": 0.4}])
def test_normalised_output_is_the_pixels_normalised(kw):
    """The same draws as the pixel output, then (pixels - mean) / std, clamped where pixels clamp."""
    x = _noise(n=32, low=0, high=255).to(torch.uint8)
    cfg = aug(**kw)
    pixels = augment_batch(x, cfg, _gen(3))
    out = augment_batch(x, cfg, _gen(3), NORM)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, (pixels - NORM.mean) / NORM.std, rtol=0, atol=2e-5)


def test_normalised_clamp_is_per_channel():
    x = torch.full((8, 3, 8, 8), 250, dtype=torch.uint8)
    out = augment_batch(x, aug(flip=False, translate=0, brightness=0.5), _gen(), NORM)
    top = (255.0 - NORM.mean) / NORM.std  # where pixel 255 lands, per channel
    assert torch.equal(out.amax(dim=(0, 2, 3)), top.flatten())
    assert torch.all(out >= (125.0 - NORM.mean) / NORM.std - 1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_output_rounds_the_float32_one(dtype):
    x = _noise(n=16).to(torch.uint8).contiguous(memory_format=torch.channels_last)
    cfg = aug(brightness=0.2, contrast=0.2, cutout=4)
    ref = augment_batch(x, cfg, _gen(1), NORM)
    out = augment_batch(x, cfg, _gen(1), NORM, dtype)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.float(), ref, rtol=2 ** -7, atol=2 ** -7)
