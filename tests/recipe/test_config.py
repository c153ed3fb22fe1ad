import pytest

from attrfit.recipe.config import TrainConfig, apply, from_dict, load_file, to_dict
from attrfit.core.errors import AttrfitError


def test_flags_and_dotted_keys():
    cfg = apply(TrainConfig(), {"lr": "0.3", "optim.weight_decay": 1e-4, "cutout": "8", "flip": "false",
                                "loss_weights": "gender=2,age=1", "heads": "a,b", "schedule": "cosine"})
    assert cfg.optim.lr == 0.3 and cfg.optim.weight_decay == 1e-4
    assert cfg.augment.cutout == 8.0 and cfg.augment.flip is False
    assert cfg.optim.loss_weights == {"gender": 2.0, "age": 1.0}
    assert cfg.data.heads == ("a", "b") and cfg.schedule.kind == "cosine"
    assert apply(TrainConfig(), {"lr": "auto"}).optim.lr == "auto"


@pytest.mark.parametrize("over, match", [
    ({"learning_rate": 1}, "unknown config key 'learning_rate'"),
    ({"epochs": "ten"}, "expected an integer"),
    ({"epochs": 2.5}, "expected an integer"),
    ({"flip": "maybe"}, "expected true or false"),
    ({"loss_weights": "gender"}, "HEAD=WEIGHT"),
])
def test_rejects_bad_overrides(over, match):
    with pytest.raises(AttrfitError, match=match):
        apply(TrainConfig(), over)


def test_unknown_key_suggests():
    with pytest.raises(AttrfitError, match="did you mean 'epochs'"):
        apply(TrainConfig(), {"epoch": 3})


def test_toml_file_sections(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('epochs = 5\n[optim]\nlr = 0.1\nloss_weights = {gender = 2.0}\n[augment]\ncutout = 0.25\n')
    cfg = apply(TrainConfig(), load_file(p))
    assert cfg.epochs == 5 and cfg.optim.lr == 0.1 and cfg.augment.cutout == 0.25
    assert cfg.optim.loss_weights == {"gender": 2.0}
    p.write_text("[optim]\nlrr = 1\n")
    with pytest.raises(AttrfitError, match="unknown config key 'optim.lrr'"):
        apply(TrainConfig(), load_file(p), source=str(p))
    p.write_text("[[[")
    with pytest.raises(AttrfitError, match="cannot parse"):
        load_file(p)


def test_roundtrip_through_dict():
    cfg = apply(TrainConfig(), {"lr": 0.3, "loss_weights": {"a": 2}, "heads": "x,y", "split": "s.json"})
    assert from_dict(to_dict(cfg)) == cfg


def test_the_default_recipe_is_the_measured_one():
    """The default recipe (README, the default recipe): no class weights (the prior-corrected rule balances after
    training), best epoch by balanced accuracy, mixup 0.2, brightness and contrast 0.2, EMA 0.998."""
    cfg = TrainConfig()
    assert not cfg.optim.class_weights and cfg.optim.class_weight_power == 1.0
    assert cfg.objective == "balanced"
    assert cfg.monitor == "mean_balanced_accuracy"
    assert (cfg.optim.mixup, cfg.optim.cutmix, cfg.augment.brightness, cfg.augment.contrast) == (0.2, 0.0, 0.2, 0.2)
    assert (cfg.optim.lr, cfg.optim.label_smoothing, cfg.optim.ema, cfg.tta) == (0.2, 0.0, 0.998, False)


def test_the_objective_sets_the_monitor_unless_it_is_chosen():
    assert TrainConfig().objective == "balanced" and TrainConfig().monitor == "mean_balanced_accuracy"
    assert apply(TrainConfig(), {"objective": "accuracy"}).monitor == "mean_accuracy"
    chosen = apply(TrainConfig(), {"objective": "accuracy", "monitor": "mean_balanced_accuracy"})
    assert (chosen.objective, chosen.monitor) == ("accuracy", "mean_balanced_accuracy")
    back = apply(apply(TrainConfig(), {"objective": "accuracy"}), {"objective": "balanced"})  # a file, then a flag
    assert back.monitor == "mean_balanced_accuracy"
    kept = apply(apply(TrainConfig(), {"monitor": "mean_accuracy"}), {"objective": "balanced"})
    assert kept.monitor == "mean_accuracy"  # a monitor chosen earlier is not the objective's to move
    assert from_dict(to_dict(apply(TrainConfig(), {"objective": "accuracy"}))).objective == "accuracy"
    with pytest.raises(AttrfitError, match="--objective"):
        apply(TrainConfig(), {"objective": "recall"})
