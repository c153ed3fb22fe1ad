"""The ablation levers: random zoom (--scale), mixup/cutmix (--mixup, --cutmix) and mirror TTA (--tta).

Each is off by default and then leaves every earlier result as it was; each is drawn only from
the step's torch.Generator, so a run stays a pure function of its seed (and resumes exactly).
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import attrfit.training.final as final
import attrfit.training.loop as loop
from attrfit.core import runs
from attrfit.data.augment import AugmentConfig, Mix, augment_batch, mix_batch, sample_beta, zoom_grid
from attrfit.evaluation.scoring import evaluate_checkpoint, run_tta
from attrfit.model import checkpoint
from attrfit.recipe.config import TrainConfig, apply
from attrfit.serving.predict import Predictor
from attrfit.training.loop import fit
from attrfit.training.losses import LossSpec, mixed_loss, multi_head_loss
from conftest import Crash, crash_at_step, PLAIN_RECIPE, assert_one_error, cli, write_tiny


def aug(**kw) -> AugmentConfig:
    """An AugmentConfig with the colour jitter off unless given (the default recipe turns it on)."""
    return AugmentConfig(**{"brightness": 0.0, "contrast": 0.0, **kw})

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _noise(n=16, h=32, w=24, seed=0):
    return 255 * torch.rand(n, 3, h, w, generator=_gen(seed))


# ---------------------------------------------------------------- --scale

def test_defaults_give_the_output_pinned_before_scale_existed():
    """Checksums of augment_batch's output computed with the code before --scale was added."""
    x = torch.randint(0, 256, (16, 3, 20, 12), generator=_gen(0), dtype=torch.uint8)
    for cfg, want in ((aug(), 70773572.0),
                      (aug(translate=3, cutout=5, cutout_count=2), 69877629.63304901)):
        out = augment_batch(x, cfg, _gen(7)).double()
        w = torch.arange(out.numel(), dtype=torch.float64).view(out.shape) % 97
        assert float((out * w).sum()) == pytest.approx(want, rel=1e-12, abs=1e-6)


def test_scale_off_draws_nothing():
    g = _gen(3)
    state = g.get_state()
    augment_batch(_noise(), aug(flip=False, translate=0, scale=0.0), g)
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_scale_shape_dtype_layout_range(dtype, fmt):
    x = _noise(h=128, w=64).to(dtype).contiguous(memory_format=fmt)
    out = augment_batch(x, aug(scale=0.3), _gen())
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=fmt)
    assert out.min() >= 0 and out.max() <= 255
    assert not torch.equal(out, augment_batch(x, aug(), _gen()))


def test_scale_is_a_function_of_the_seed():
    x, cfg = _noise(), aug(flip=False, translate=0, scale=0.25)
    a, b = augment_batch(x, cfg, _gen(1)), augment_batch(x, cfg, _gen(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, cfg, _gen(2)))


def test_a_tiny_scale_is_close_to_identity():
    x = _noise()
    out = augment_batch(x, aug(flip=False, translate=0, scale=0.0001), _gen())
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
    out = augment_batch(x, aug(flip=False, translate=0, scale=0.5), _gen(5))
    steps = out[:, 0, h // 2].diff(dim=1)  # N x (W - 1)
    z = 4 / steps.abs().median(dim=1).values
    assert z.min() >= 0.5 - 1e-3 and z.max() <= 1.5 + 1e-3
    assert z.min() < 0.8 and z.max() > 1.2  # both directions happen
    assert (steps[z > 1] >= -1e-3).all()
    assert (steps[z < 0.8] < -1).any()
    assert torch.equal(out[:, 0], out[:, 2])  # the same map for every channel


# ---------------------------------------------------------------- --mixup, --cutmix


def test_beta_draws_follow_beta_and_only_the_generator():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for alpha in (0.2, 1.0, 4.0):
        g = _gen(11)
        draws = torch.tensor([sample_beta(alpha, g) for _ in range(3000)], dtype=torch.float64)
        assert 0 <= draws.min() and draws.max() <= 1
        assert abs(draws.mean() - 0.5) < 0.02
        assert abs(draws.var() - 1 / (4 * (2 * alpha + 1))) < 0.01  # Beta(a, a) variance
        assert draws[:50].tolist() == [sample_beta(alpha, g2) for g2 in [_gen(11)] for _ in range(50)]
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is never touched


@pytest.mark.parametrize("mixup,cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_mix_batch_shapes_layout_range_and_seed(mixup, cutmix, fmt, dtype):
    x = _noise(n=8).to(dtype).contiguous(memory_format=fmt)
    m = mix_batch(x, mixup, cutmix, _gen(4))
    assert m.images.shape == x.shape and m.images.dtype == torch.float32
    assert m.images.is_contiguous(memory_format=fmt)
    assert m.images.min() >= 0 and m.images.max() <= 255 and 0 <= m.lam <= 1
    assert sorted(m.perm.tolist()) == list(range(8))
    again = mix_batch(x, mixup, cutmix, _gen(4))
    assert torch.equal(m.images, again.images) and torch.equal(m.perm, again.perm) and m.lam == again.lam
    other = mix_batch(x, mixup, cutmix, _gen(5))
    assert not torch.equal(m.images, other.images)


@pytest.mark.parametrize("mixup,cutmix", [(0.4, 0.0), (0.0, 1.0)])
def test_mix_batch_keeps_a_low_precision_batch(mixup, cutmix):
    """augment_batch makes the batch in the model's compute dtype; mixing must not widen it back."""
    x = _noise(n=8).to(torch.bfloat16)
    m = mix_batch(x, mixup, cutmix, _gen(2))
    assert m.images.dtype == torch.bfloat16
    torch.testing.assert_close(m.images.float(), mix_batch(x.float(), mixup, cutmix, _gen(2)).images,
                               rtol=2 ** -7, atol=0.0)


def test_mixup_blends_with_the_permuted_batch():
    x = _noise(n=8)
    m = mix_batch(x, 0.4, 0.0, _gen(1))
    assert torch.allclose(m.images, m.lam * x + (1 - m.lam) * x[m.perm], atol=1e-4)


def test_cutmix_pastes_one_box_and_lam_is_the_share_left():
    x = _noise(n=8, h=20, w=16)
    for seed in range(20):
        m = mix_batch(x, 0.0, 1.0, _gen(seed))
        pasted = (m.images != x).any(1)  # N x H x W: where the copy's pixels landed
        box = pasted[m.perm != torch.arange(8)].any(0)  # the same box in every mixed image
        assert torch.equal(m.images[:, :, box], x[m.perm][:, :, box])
        assert torch.equal(m.images[:, :, ~box], x[:, :, ~box])
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        if len(rows):  # a rectangle
            assert box.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert m.lam == pytest.approx(1 - box.sum().item() / (20 * 16))


def test_both_on_picks_mixup_or_cutmix_per_batch():
    x = _noise(n=8)
    kinds = set()
    for seed in range(30):
        m = mix_batch(x, 0.4, 1.0, _gen(seed))
        blended = torch.allclose(m.images, m.lam * x + (1 - m.lam) * x[m.perm], atol=1e-4)
        kinds.add("mixup" if blended and 0.01 < m.lam < 0.99 else "cutmix" if not blended else "?")
    assert {"mixup", "cutmix"} <= kinds


def _logits_targets(seed=0):
    g = _gen(seed)
    logits = (torch.randn(6, 3, generator=g, requires_grad=True), torch.randn(6, 2, generator=g, requires_grad=True))
    targets = torch.tensor([[0, 1], [1, -1], [2, 0], [0, -1], [1, 1], [-1, 0]])
    return logits, targets


def test_mixed_loss_with_lam_1_is_the_plain_loss():
    logits, targets = _logits_targets()
    spec = LossSpec([1.0, 2.0], [torch.tensor([1.0, 2.0, 0.5]), None], 0.1)
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    plain = multi_head_loss(logits, targets, spec)
    mixed = mixed_loss(logits, targets, spec, Mix(torch.zeros(0), perm, 1.0))
    assert torch.equal(mixed[0], plain[0]) and torch.equal(mixed[1], plain[1])


def _manual_ce(logit, target, weight=None, eps=0.0):
    """Mean over the labelled rows of a head, summed then divided by their count (as multi_head_loss does)."""
    keep = target >= 0
    loss = F.cross_entropy(logit[keep], target[keep], weight=weight, label_smoothing=eps, reduction="sum")
    return loss / keep.sum()


def test_mixed_loss_skips_missing_labels_in_both_terms_and_keeps_weights_and_smoothing():
    logits, targets = _logits_targets()
    weight = torch.tensor([1.0, 2.0, 0.5])
    spec = LossSpec([1.0, 3.0], [weight, None], 0.1)
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    lam = 0.3
    total, per_head = mixed_loss(logits, targets, spec, Mix(torch.zeros(0), perm, lam))
    want = [lam * _manual_ce(logits[0], targets[:, 0], weight, 0.1)
            + (1 - lam) * _manual_ce(logits[0], targets[perm, 0], weight, 0.1),
            lam * _manual_ce(logits[1], targets[:, 1], None, 0.1)
            + (1 - lam) * _manual_ce(logits[1], targets[perm, 1], None, 0.1)]
    assert torch.allclose(per_head, torch.stack(want))
    assert torch.allclose(total, want[0] + 3 * want[1])

    # only row 2 has a 'bright' label: its own term reaches row 2, its partner term the row mixed with it
    # (perm[1] = 2); every other row gets no gradient from that head
    t2 = targets.clone()
    t2[:, 1] = torch.tensor([-1, -1, 0, -1, -1, -1])
    mixed_loss(logits, t2, spec, Mix(torch.zeros(0), perm, lam))[0].backward()
    assert (logits[1].grad.abs().sum(1) > 0).tolist() == [False, True, True, False, False, False]


def test_mixed_loss_of_a_head_without_labels_is_zero():
    logits, targets = _logits_targets()
    targets[:, 1] = -1
    _, per_head = mixed_loss(logits, targets, LossSpec([1.0, 1.0], [None, None]), Mix(torch.zeros(0), torch.arange(6), 0.5))
    assert per_head[1] == 0 and torch.isfinite(per_head).all()


# ---------------------------------------------------------------- in a run


def tiny_cfg(csv, **over) -> TrainConfig:
    base = {"data.csv": str(csv), "size": "16x16", "width": 8, "stages": 2, "epochs": 2, "batch_size": 16,
            "lr": 0.05, "eval_batch_size": 64, "report": False, "seed": 1, "precision": "fp32"}
    return apply(TrainConfig(), {**PLAIN_RECIPE, **base, **over})


def _weights(run, name="last.pt"):
    return checkpoint.load(run / name)["model"]


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return all(torch.equal(v, wb[k]) for k, v in wa.items())


def _val(run) -> list[str]:
    return [r["val_mean_accuracy"] + r["train_loss"] for r in runs.MetricsLog(run / "metrics.csv").rows()]


def test_levers_off_leave_a_run_as_it_was(tiny, tmp_path):
    ref = fit(tiny_cfg(tiny), run_dir=tmp_path / "ref", progress=False)
    off = fit(tiny_cfg(tiny, scale=0.0, mixup=0.0, cutmix=0.0, tta=False), run_dir=tmp_path / "off", progress=False)
    assert _same_weights(ref, off) and _val(ref) == _val(off)


def test_a_run_with_mixup_cutmix_and_scale_is_a_function_of_its_seed_and_resumes_bit_identical(
        tiny, tmp_path, monkeypatch):
    levers = {"mixup": 0.4, "cutmix": 1.0, "scale": 0.2, "batch_size": 8}  # 5 steps an epoch
    ref = fit(tiny_cfg(tiny, **levers), run_dir=tmp_path / "ref", progress=False)
    plain = fit(tiny_cfg(tiny), run_dir=tmp_path / "plain", progress=False)
    assert not _same_weights(ref, plain)
    restore_step = crash_at_step(monkeypatch, 3)
    with pytest.raises(Crash):
        fit(tiny_cfg(tiny, checkpoint_every=2, **levers), run_dir=tmp_path / "b", progress=False)
    restore_step()
    assert checkpoint.load(tmp_path / "b" / "last.pt")["progress"]["step"] == 2
    fit(None, resume=tmp_path / "b", progress=False)
    assert _same_weights(ref, tmp_path / "b") and _val(ref) == _val(tmp_path / "b")


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("flag,value,needle", [("--mixup", "-1", "--mixup (config key optim.mixup) must be in [0, 100]"),
                                               ("--cutmix", "nan", "--cutmix"),
                                               ("--scale", "1", "--scale (config key augment.scale) must be in [0, 1)")])
def test_a_bad_value_is_refused_before_any_file_is_written(tiny, tmp_path, capsys, flag, value, needle):
    before = _files(tmp_path)
    code, _, err = cli(capsys, "train", tiny, flag, value, "--run-dir", tmp_path / "run", "--size", "16x16")
    assert_one_error(code, err, needle)
    assert _files(tmp_path) == before


# ---------------------------------------------------------------- --tta


def _forward_probs(model, images) -> list[np.ndarray]:
    with torch.no_grad():
        return [o.softmax(1).numpy() for o in model.eval()(images.float())]


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory):
    """A run with --tta whose every val and test scoring is recorded: (run, [(images, model copy, probs)])."""
    root = tmp_path_factory.mktemp("tta")
    csv = write_tiny(root / "data")
    seen = []
    real = loop.evaluate_images

    def spy(model, images, *a, **k):
        results, probs = real(model, images, *a, **k)
        seen.append((images.clone(), copy.deepcopy(model), probs, k.get("tta")))
        return results, probs

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "evaluate_images", spy)  # validation
        mp.setattr(final, "evaluate_images", spy)  # the test side, once
        run = fit(tiny_cfg(csv, tta=True, **{"data.cache_dir": str(root / "cache")}), run_dir=root / "run",
                  progress=False)
    return run, seen


def test_tta_averages_each_val_and_test_image_with_its_mirror(tta_run):
    run, seen = tta_run
    assert len(seen) == 3 and all(tta for *_, tta in seen)  # 2 epochs of val, then the test side once
    for images, model, probs, _ in seen:
        plain, mirror = _forward_probs(model, images), _forward_probs(model, images.flip(3))
        for p, a, b in zip(probs, plain, mirror):
            assert np.allclose(p, (a + b) / 2, atol=1e-5)
            assert not np.allclose(p, a, atol=1e-4)  # and that is not the plain prediction


def test_a_run_without_tta_validates_plainly(tiny, tmp_path, monkeypatch):
    flags = []
    real = loop.evaluate_images
    spy = lambda *a, **k: (flags.append(k.get("tta")), real(*a, **k))[1]  # noqa: E731
    monkeypatch.setattr(loop, "evaluate_images", spy)
    monkeypatch.setattr(final, "evaluate_images", spy)
    fit(tiny_cfg(tiny, epochs=1), run_dir=tmp_path / "run", progress=False)
    assert flags == [False, False]


def test_evaluate_and_predict_use_the_runs_tta_unless_told_otherwise(tta_run, capsys):
    run, _ = tta_run
    ckpt = checkpoint.Checkpoint.load(run / "best.pt")
    older = dataclasses.replace(ckpt, config={k: v for k, v in ckpt.config.items() if k != "tta"})
    assert run_tta(ckpt) and not run_tta(older)  # checkpoints from before the option: off
    stored = json.loads((run / "results.json").read_text())
    default = evaluate_checkpoint(str(run), progress=False, device="cpu")
    assert default.tta is True and default.to_json()["mean"] == pytest.approx(stored["mean"])
    assert evaluate_checkpoint(str(run), tta=False, progress=False, device="cpu").tta is False
    code, out, _ = cli(capsys, "evaluate", run, "--device", "cpu")
    assert code == 0 and "mirror TTA" in out.splitlines()[0]
    code, out, _ = cli(capsys, "evaluate", run, "--device", "cpu", "--no-tta")
    assert code == 0 and "mirror TTA" not in out.splitlines()[0]

    predictor = Predictor.from_checkpoint(run)
    x = torch.randint(0, 256, (5, 3, 16, 16), generator=_gen(0), dtype=torch.uint8)
    default, on, off = (predictor.predict_pixels(x, tta=t).probs for t in (None, True, False))
    assert predictor.tta is True
    for h in default:
        assert np.array_equal(default[h], on[h]) and not np.allclose(default[h], off[h], atol=1e-4)


def test_predict_command_uses_the_runs_tta_unless_told_no_tta(tta_run, capsys):
    run, _ = tta_run
    image = run.parent / "data" / "img" / "0.png"
    outputs = {}
    for flags in ((), ("--tta",), ("--no-tta",)):
        code, out, err = cli(capsys, "predict", run, image, "--all-probs", "--quiet", "--device", "cpu", *flags)
        assert code == 0, err
        outputs[flags] = out
    assert outputs[()] == outputs[("--tta",)] != outputs[("--no-tta",)]


def test_train_accuracy_under_mixing_counts_the_larger_shares_labels():
    y = torch.tensor([[0, 1], [1, -1], [2, 0]])
    perm = torch.tensor([2, 0, 1])
    assert torch.equal(Mix(torch.zeros(0), perm, 0.7).dominant(y), y)
    assert torch.equal(Mix(torch.zeros(0), perm, 0.3).dominant(y), y[perm])
