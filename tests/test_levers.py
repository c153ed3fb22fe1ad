"""The ablation levers: random zoom (--scale), mixup/cutmix (--mixup, --cutmix) and mirror TTA (--tta).

Each is off by default and then leaves every earlier result as it was; each is drawn only from
the step's torch.Generator, so a run stays a pure function of its seed (and resumes exactly).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attrfit.data.augment import AugmentConfig, augment_batch, zoom_grid

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _noise(n=16, h=32, w=24, seed=0):
    return 255 * torch.rand(n, 3, h, w, generator=_gen(seed))


# ---------------------------------------------------------------- --scale

def test_defaults_give_the_output_pinned_before_scale_existed():
    """Checksums of augment_batch's output computed with the code before --scale was added."""
    x = torch.randint(0, 256, (16, 3, 20, 12), generator=_gen(0), dtype=torch.uint8)
    for cfg, want in ((AugmentConfig(), 70773572.0),
                      (AugmentConfig(translate=3, cutout=5, cutout_count=2), 69877629.63304901)):
        out = augment_batch(x, cfg, _gen(7)).double()
        w = torch.arange(out.numel(), dtype=torch.float64).view(out.shape) % 97
        assert float((out * w).sum()) == pytest.approx(want, rel=1e-12, abs=1e-6)


def test_scale_off_draws_nothing():
    g = _gen(3)
    state = g.get_state()
    augment_batch(_noise(), AugmentConfig(flip=False, translate=0, scale=0.0), g)
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_scale_shape_dtype_layout_range(dtype, fmt):
    x = _noise(h=128, w=64).to(dtype).contiguous(memory_format=fmt)
    out = augment_batch(x, AugmentConfig(scale=0.3), _gen())
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=fmt)
    assert out.min() >= 0 and out.max() <= 255
    assert not torch.equal(out, augment_batch(x, AugmentConfig(), _gen()))


def test_scale_is_a_function_of_the_seed():
    x, cfg = _noise(), AugmentConfig(flip=False, translate=0, scale=0.25)
    a, b = augment_batch(x, cfg, _gen(1)), augment_batch(x, cfg, _gen(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, cfg, _gen(2)))


def test_a_tiny_scale_is_close_to_identity():
    x = _noise()
    out = augment_batch(x, AugmentConfig(flip=False, translate=0, scale=0.0001), _gen())
    assert (out - x).abs().max() < 1.0  # up to 0.003 px of movement on 0..255 noise


def test_zoom_grid_equals_affine_grid():
    inv = torch.tensor([[0.8], [1.25], [1.0]])
    shift = torch.tensor([[0.1, -0.05], [0.0, 0.2], [0.0, 0.0]])
    theta = torch.zeros(3, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = inv[:, 0]
    theta[:, :, 2] = shift
    want = F.affine_grid(theta, [3, 3, 10, 6], align_corners=False)
    assert torch.allclose(zoom_grid(inv, shift, 10, 6), want, atol=1e-6)


def test_zoom_factors_and_zoom_in_is_a_crop_inside_the_image():
    """On a horizontal ramp (slope 4 per px), zooming by z makes the slope 4 / z; a zoom in (z > 1) is a crop,
    so its rows stay increasing, while a zoom out shows reflected borders (a fold) somewhere."""
    h, w = 40, 30
    x = (4.0 * torch.arange(w, dtype=torch.float32)).expand(64, 3, h, w).contiguous()
    out = augment_batch(x, AugmentConfig(flip=False, translate=0, scale=0.5), _gen(5))
    steps = out[:, 0, h // 2].diff(dim=1)  # N x (W - 1)
    z = 4 / steps.abs().median(dim=1).values
    assert z.min() >= 0.5 - 1e-3 and z.max() <= 1.5 + 1e-3
    assert z.min() < 0.8 and z.max() > 1.2  # both directions happen
    assert (steps[z > 1] >= -1e-3).all()
    assert (steps[z < 0.8] < -1).any()
    assert torch.equal(out[:, 0], out[:, 2])  # the same map for every channel
