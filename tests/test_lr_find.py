import json

import numpy as np
import pytest
import torch

import attrfit.training.lr_find as lf
import attrfit.training.lr_rules as rules
from attrfit.model import checkpoint
from attrfit.cli.app import main
from attrfit.recipe.config import TrainConfig, apply
from attrfit.data.load import load_data
from attrfit.training.distributed import Dist
from attrfit.training.loop import fit
from attrfit.training.sides import make_sides
from attrfit.training.trainer import build_trainer, train_step

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a busy machine OpenMP threads spin and crawl."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_cfg(csv, **over) -> TrainConfig:
    base = {"data.csv": str(csv), "size": "16x16", "width": 8, "stages": 2, "epochs": 2, "batch_size": 16,
            "eval_batch_size": 64, "report": False, "seed": 1, "precision": "fp32"}
    return apply(TrainConfig(), {**base, **over})


def tiny_trainer(csv, **over):
    cfg = tiny_cfg(csv, **over)
    data = load_data(cfg.data, progress=False)
    sides = make_sides(data)
    return build_trainer(cfg, data.schema, sides, max_lr=1.0, dist=Dist()), sides, data


# ---------------------------------------------------------------- synthetic curves with known answers

LRS = np.logspace(-6, 1, 141)  # 0.05 decade apart
X = np.log10(LRS)


def clean_curve() -> np.ndarray:
    """Flat at 2.0, tanh descent centred on 10^-2.5 to 0.5, blows up past its floor at 10^-1."""
    return 1.25 - 0.75 * np.tanh(2 * (X + 2.5)) + 3 * np.maximum(0.0, X + 1) ** 2


# Exact answers (log10 LR) of the clean curve: steepest at the tanh's centre; the floor where
# -1.5 sech^2(2(x + 2.5)) + 6(x + 1) = 0, i.e. x = -0.9975; valley where the loss has made
# 2/3 of its fall from ~2.0 to ~0.5037, i.e. tanh(2(x + 2.5)) = 0.33, x = -2.329; blow-up
# where 0.5 + 3(x + 1)^2 climbs back above 2.0, x = -1 + sqrt(0.5) = -0.293.
KNOWN = {"steepest": -2.5, "minimum/10": -1.0 - 1.0, "valley": -2.5 + np.arctanh(0.33) / 2,
         "blowup/10": -1.0 + np.sqrt(0.5) - 1.0}


def noisy_curve(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = clean_curve() + rng.normal(0, 0.08, len(X))
    y[4] += 6.0  # a spike inside the ignored start
    y[22:24] += 4.0  # and a burst of two bad batches after it (at 15%), which fools slope-reading rules
    return y


@pytest.mark.parametrize("rule", list(rules.RULES))
def test_each_rule_finds_the_known_answer_on_a_clean_curve(rule):
    got = np.log10(rules.RULES[rule](LRS, clean_curve()))
    assert got == pytest.approx(KNOWN[rule], abs=0.051)  # within one grid step
    assert set(rules.RULES) == set(KNOWN)


@pytest.mark.parametrize("rule", list(rules.RULES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rules_shrug_off_noise_and_an_early_spike(rule, seed):
    beta = rules.smoothing_beta(len(LRS))
    reference = np.log10(rules.RULES[rule](LRS, rules.smooth(clean_curve(), beta)))
    got = np.log10(rules.RULES[rule](LRS, rules.smooth(noisy_curve(seed), beta)))
    assert got == pytest.approx(reference, abs=0.2)
    # the smoothing moves the answer right by its lag (~0.3 decade here), never left
    assert KNOWN[rule] - 0.06 <= reference <= KNOWN[rule] + 0.45


def test_the_spike_would_fool_a_naive_rule():
    """The noisy curve is a real test: the steepest raw slope of its smoothed version sits at the spike."""
    s = rules.smooth(noisy_curve(), rules.smoothing_beta(len(LRS)))
    naive = X[int(np.argmin(np.gradient(s, X)))]
    assert abs(naive - KNOWN["steepest"]) > 1.0


def test_smooth_is_a_bias_corrected_ema():
    assert np.allclose(rules.smooth([3.0] * 20, beta=0.9), 3.0)  # no pull towards 0 at the start
    x = [1.0, 5.0, 2.0]
    b = 0.7
    a1 = (1 - b) * 1.0
    a2 = b * a1 + (1 - b) * 5.0
    a3 = b * a2 + (1 - b) * 2.0
    assert rules.smooth(x, b) == pytest.approx([a1 / (1 - b), a2 / (1 - b**2), a3 / (1 - b**3)])


def test_blowup_needs_the_loss_back_above_its_start_and_says_when_it_never_is():
    y = clean_curve()
    bump = y.copy()
    bump[(X > -0.9) & (X < -0.6)] += 0.8  # a bump past the floor that stays below 2.0: not a blow-up
    assert rules.blowup_tenth(LRS, bump) == rules.blowup_tenth(LRS, y)
    tame = np.minimum(y, 1.0)[: 130]  # never back above 2.0 before the sweep ends
    assert rules.blowup_tenth(LRS[:130], tame) == pytest.approx(LRS[129] / 10)  # a lower bound
    curves = [{"lrs": list(LRS[:130]), "smoothed": list(tame)}]
    s = {**lf.summarize(curves, "valley"), "repeats": curves, "settings": {"max_lr": float(LRS[129])}}
    assert any("never blew up" in w for w in lf._warnings(s))


def test_rules_ignore_points_after_a_non_finite_loss():
    y = clean_curve()
    y[100:] = np.nan
    assert rules.minimum_tenth(LRS, y) == pytest.approx(rules.minimum_tenth(LRS[:100], clean_curve()[:100]))


def test_summary_takes_the_median_and_says_when_repeats_disagree():
    curves = [{"lrs": list(LRS * f), "smoothed": list(clean_curve())} for f in (1.0, 2.0, 10.0)]
    s = lf.summarize(curves, "valley")
    one = rules.valley(LRS, clean_curve())
    assert s["chosen"] == pytest.approx(2 * one)  # the middle one
    assert s["spread_decades"] == pytest.approx(1.0)
    assert s["spread_wide"]
    assert set(s["suggestions"]) == set(rules.RULES)
    s["repeats"], s["settings"] = curves, {"max_lr": 10.0}
    assert "'valley' suggestions span 1.00 decades" in lf._warnings(s)[0]
    assert not lf.summarize(curves[:1], "valley")["spread_wide"]


# ---------------------------------------------------------------- the sweep leaves no trace

def state(t):
    return {
        "model": {k: v.clone() for k, v in t.model.state_dict().items()},
        "optimizer": [(p["lr"], p["momentum"]) for p in t.optimizer.param_groups],
        "momentum_buffers": [t.optimizer.state[p]["momentum_buffer"].clone() for p in t.model.parameters()],
        "ema": {k: v.clone() for k, v in t.ema.state_dict().items()},
        "rng": torch.get_rng_state(),
        "training": t.model.training,
    }


def assert_same(a, b):
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k  # weights and BatchNorm buffers, bit for bit
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    assert all(torch.equal(x, y) for x, y in zip(a["momentum_buffers"], b["momentum_buffers"]))
    assert a["optimizer"] == b["optimizer"]
    assert torch.equal(a["rng"], b["rng"])
    assert a["training"] == b["training"]


def test_range_test_restores_everything_bit_for_bit(tiny):
    t, sides, _ = tiny_trainer(tiny, ema=0.9)
    x, y = sides.train_images[:16], sides.train_labels[:16]
    train_step(t, x, y, 0, 0.05, 0.9)  # momentum buffers, EMA and BN statistics now hold something
    t.model.eval()  # and a mode the sweep must not leave changed
    before = state(t)
    first = lf.range_test(t, sides, 1e-4, 1.0, 30, order_seed=0)
    assert len(set(first["losses"])) > 20  # it did train
    assert_same(before, state(t))
    again = lf.range_test(t, sides, 1e-4, 1.0, 30, order_seed=0)
    assert again["losses"] == first["losses"]  # so the second sweep started from the same weights
    other = lf.range_test(t, sides, 1e-4, 1.0, 30, order_seed=1)
    assert other["losses"] != first["losses"]  # another batch order


def test_range_test_restores_after_an_exception(tiny, monkeypatch):
    t, sides, _ = tiny_trainer(tiny, ema=0.9)
    train_step(t, sides.train_images[:16], sides.train_labels[:16], 0, 0.05, 0.9)
    before = state(t)

    def failing_step(t, x, y, step, lr, momentum):
        if step == 5:
            raise KeyboardInterrupt
        return train_step(t, x, y, step, lr, momentum)

    monkeypatch.setattr(lf, "train_step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        lf.range_test(t, sides, 1e-4, 1.0, 30, order_seed=0)
    assert_same(before, state(t))


def scripted(monkeypatch, losses):
    """Make train_step return losses[i] at step i (order_seed 0), without training."""
    def step(t, x, y, i, lr, momentum):
        return torch.tensor(losses[i]), None, None

    monkeypatch.setattr(lf, "train_step", step)


def test_stops_once_the_smoothed_loss_exceeds_a_multiple_of_its_best(tiny, monkeypatch):
    t, sides, _ = tiny_trainer(tiny)
    losses = [2.0] * 10 + [1.0] * 10 + [2.0 * 1.5**k for k in range(20)]
    scripted(monkeypatch, losses)
    r = lf.range_test(t, sides, 1e-4, 1.0, 40, order_seed=0, diverge=4.0)
    beta = rules.smoothing_beta(40)
    first_over = next(k for k in range(40) if rules.smooth(losses[: k + 1], beta)[-1]
                      > 4.0 * rules.smooth(losses[: k + 1], beta).min())
    assert len(r["lrs"]) == first_over + 1 < 40  # the step that crossed is recorded, nothing after
    assert r["stop_reason"].startswith("smoothed loss")
    assert r["lrs"] == pytest.approx(list(rules.exponential_lrs(1e-4, 1.0, 40)[: first_over + 1]))


def test_stops_before_a_non_finite_loss_and_runs_to_the_end_otherwise(tiny, monkeypatch):
    t, sides, _ = tiny_trainer(tiny)
    scripted(monkeypatch, [1.0] * 12 + [float("nan")] + [1.0] * 27)
    r = lf.range_test(t, sides, 1e-4, 1.0, 40, order_seed=0)
    assert len(r["losses"]) == 12 and "nan" in r["stop_reason"]
    scripted(monkeypatch, [1.0] * 40)
    r = lf.range_test(t, sides, 1e-4, 1.0, 40, order_seed=0)
    assert len(r["losses"]) == 40 and r["stop_reason"] is None
    assert r["lrs"][0] == pytest.approx(1e-4) and r["lrs"][-1] == pytest.approx(1.0)


def test_a_real_divergence_stops_early(tiny):
    t, sides, _ = tiny_trainer(tiny)
    r = lf.range_test(t, sides, 1e-3, 1e5, 40, order_seed=0)
    assert r["stop_reason"] is not None and len(r["lrs"]) < 40


# ---------------------------------------------------------------- find_lr, the command, train --lr auto

def test_find_lr_writes_json_and_plot_and_leaves_the_rng(tiny, tmp_path):
    _, sides, data = tiny_trainer(tiny)
    rng = torch.get_rng_state()
    r = lf.find_lr(tiny_cfg(tiny), data.schema, sides, tmp_path / "out", 1e-4, 10.0, 30, 3)
    assert torch.equal(rng, torch.get_rng_state())
    saved = json.loads((tmp_path / "out" / "lr_find.json").read_text())
    assert (tmp_path / "out" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert len(saved["repeats"]) == 3
    for c in saved["repeats"]:
        assert len(c["lrs"]) == len(c["losses"]) == len(c["smoothed"]) > 0
    per_repeat = saved["suggestions"]["valley"]["per_repeat"]
    assert saved["chosen"] == pytest.approx(sorted(per_repeat)[1]) == pytest.approx(r["chosen"])
    assert saved["spread_decades"] == pytest.approx(np.log10(max(per_repeat) / min(per_repeat)))
    assert set(saved["suggestions"]) == {"valley", "steepest", "minimum/10", "blowup/10"}
    assert saved["onecycle_max_lr"] == pytest.approx(saved["suggestions"]["blowup/10"]["median"])


def test_lr_find_command(tiny, tmp_path, capsys):
    out = tmp_path / "lrf"
    argv = ["lr-find", str(tiny), "--size", "16x16", "--width", "8", "--stages", "2", "--batch-size", "16",
            "--precision", "fp32", "--min-lr", "1e-4", "--steps", "20", "--repeats", "2", "--rule", "steepest",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "chosen LR" in text and "steepest" in text and "spread" in text and "one-cycle max LR" in text
    assert json.loads((out / "lr_find.json").read_text())["rule"] == "steepest"
    assert main(argv) == 2  # never overwrites without --force
    assert "--force" in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0


def test_train_lr_auto_uses_and_records_the_range_test(tiny, tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="attrfit")
    monkeypatch.setattr(lf, "AUTO_STEPS", 30)
    monkeypatch.setattr(lf, "AUTO_REPEATS", 2)
    run = fit(tiny_cfg(tiny, lr="auto", epochs=1), run_dir=tmp_path / "run", progress=False)
    found = json.loads((run / "lr_find" / "lr_find.json").read_text())
    assert (run / "lr_find" / "lr_find.png").is_file()
    assert checkpoint.load(run / "last.pt")["max_lr"] == pytest.approx(found["onecycle_max_lr"])
    assert f"lr auto: max LR {found['onecycle_max_lr']:.3g} (blowup/10" in caplog.text
