"""Typed training configuration: dataclass sections, a config file, and command-line flags.

Precedence: defaults < config file (TOML, or YAML with pyyaml) < flags. Every leaf field
is addressable as ``section.field`` (``optim.lr``, ``augment.cutout``) and has one flag
(``--lr``, ``--cutout``). Unknown keys and wrongly typed values are errors that name the
key and, where close, the key that was probably meant. The resolved config is written to
the run folder and into every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from attrfit.data.augment import AugmentConfig
from attrfit.data.load import DataConfig
from attrfit.core.errors import AttrfitError
from attrfit.model.net import ModelConfig, saved_fields
from attrfit.core.options import Duration, EachValue, OneOf, OrWord, Pattern, Range, check_value, flag_of, option
from attrfit.recipe.schedule import ScheduleConfig
from attrfit.data.split import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION


MONITORS = ("mean_accuracy", "mean_balanced_accuracy")
# --objective: what the user wants the run's answers for -> the monitor it sets (unless --monitor is given);
# the decision rule it sets is attrfit.evaluation.decisions.OBJECTIVE_RULE
OBJECTIVES = {"balanced": "mean_balanced_accuracy", "accuracy": "mean_accuracy"}
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
OPTIMIZERS = ("sgd", "adamw")
FRACTION = Range(0, 1, hi_open=True)

# The plain recipe: cross-entropy without class weights, the best epoch by mean accuracy, no mixup, colour
# jitter or weight averaging. What the demo and the mechanics tests train with (on a few thousand easy
# images the default, tuned for real data and long runs, learns too slowly to show anything).
PLAIN_RECIPE = {"class_weights": False, "objective": "accuracy", "monitor": "mean_accuracy", "mixup": 0.0,
                "brightness": 0.0, "contrast": 0.0, "ema": 0.0}


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = option("sgd", "sgd (with Nesterov momentum) or adamw", "{sgd,adamw}", OneOf(*OPTIMIZERS))
    lr: float | str = option(0.2, "max learning rate of the schedule, or 'auto' to run the LR range test first",
                             "LR|auto", OrWord("auto", Range(0, 100, lo_open=True)), lr_find=False)
    momentum: float = option(0.9, "SGD momentum, or AdamW beta1 (onecycle cycles it between --momentum-max and "
                             "--momentum-min instead)", "M", FRACTION)
    nesterov: bool = option(True, "Nesterov momentum for SGD")
    weight_decay: float = option(5e-4, "L2 penalty on conv and linear weights (not BatchNorm, not biases)", "WD",
                                 Range(0, 1))
    grad_clip: float = option(0.0, "clip the global gradient norm to this; 0 = off", "NORM", Range(0, 1_000_000))
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy", "EPS", FRACTION)
    # Off by default: plain cross-entropy, then the prior-corrected decision rule fitted on val, scored as high a
    # balanced accuracy as class weights and a far higher accuracy (docs/experiments/decisions-recipe.md)
    class_weights: bool = option(False, "weight each class by its inverse frequency on the train side in the loss "
                                 "(off: the decision rule divides by the class priors after training instead)")
    class_weight_power: float = option(1.0, "with --class-weights: the power of the inverse frequency (1 = fully "
                                       "balanced, 0.5 = its square root: milder, costs less accuracy)", "P",
                                       Range(0, 1))
    logit_adjust: float = option(0.0, "logit-adjusted loss: train each head's softmax on its logits plus TAU * "
                                 "log(the class's train frequency), so that the plain logits rank classes by "
                                 "p(class | image) / frequency, what balanced accuracy rewards; unlike class weights "
                                 "the correction does not fade as the model fits the train side; 0 = off", "TAU",
                                 Range(0, 10))
    loss_weights: dict[str, float] = option(
        help="per-head loss weights, e.g. gender=2,age=1 (others 1)", metavar="HEAD=W,...",
        check=EachValue(Range(0, 1000)), default_factory=dict, default_text="1 for every head")
    mixup: float = option(0.2, "mixup: blend each training batch with a shuffled copy of itself, weight lam from "
                          "Beta(A, A) per batch, and each head's loss likewise (lam * own labels + (1 - lam) * the "
                          "copy's); 0 = off", "A", Range(0, 100))
    cutmix: float = option(0.0, "cutmix: paste one box of a shuffled copy into each training batch, lam from "
                           "Beta(A, A) per batch and the loss mixed by the box's area; with --mixup too, each batch "
                           "uses one of the two at random; 0 = off", "A", Range(0, 100))
    ema: float = option(0.998, "decay of the exponential moving average of the weights that validation, the "
                        "test scoring and prediction use, warmed up as min(DECAY, (1 + step) / (10 + step)); "
                        "0 = off (the trained weights themselves)", "DECAY", FRACTION, lr_find=False)


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = option(12, "passes over the train side", "N", Range(1), lr_find=False)
    batch_size: int = option(128, "global batch size (split across processes under torchrun)", "N",
                             Range(2, why="BatchNorm needs two or more images per batch"))
    seed: int = option(0, "seed of the model's initial weights, the batch order and the augmentation", "N",
                       Range(0, 2**32 - 1))
    objective: str = option("balanced", "what the run's answers are for: balanced (balanced accuracy, every class "
                            "counts) or accuracy (plain accuracy); sets --monitor (mean_balanced_accuracy or "
                            "mean_accuracy) unless it is given, and the decision rule evaluate, predict, compare and "
                            "the report use unless told --decide (prior-corrected or most-probable); the training "
                            "recipe is otherwise the same", "{" + ",".join(OBJECTIVES) + "}", OneOf(*OBJECTIVES),
                            lr_find=False)
    monitor: str = option("mean_balanced_accuracy", "the val-side mean that picks the best epoch", "METRIC",
                          OneOf(*MONITORS), lr_find=False)
    precision: str = option("auto", "auto (bf16 where the hardware is fast at it, else fp32), bf16, fp16 or fp32",
                            "{" + ",".join(PRECISIONS) + "}", OneOf(*PRECISIONS))
    channels_last: bool = option(True, "channels-last memory layout (faster convolutions on most hardware)")
    compile: bool = option(False, "torch.compile the model (slow start, faster steps)")
    device: str = option("auto", "where to train; auto picks a CUDA GPU if there is one", "DEVICE",
                         Pattern(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N (N a GPU index)"))
    threads: int = option(0, "torch CPU threads; 0 = torch's default", "N", Range(0, 4096))
    tta: bool = option(False, "average each image's prediction with its mirror's in validation and the test scoring; "
                       "stored in the run, so its evaluate, report and predict do the same unless told --no-tta",
                       lr_find=False)
    eval_batch_size: int = option(512, "batch size for validation and test scoring (no gradients)", "N",
                                  Range(1), lr_find=False)
    checkpoint_every: int = option(0, "also write last.pt every N steps inside an epoch; 0 = at epoch ends only",
                                   "N", Range(0), lr_find=False)
    init_from: str | None = option(None, "start from these weights (a checkpoint or run folder) with a new "
                                   "schedule", "PATH")
    report: bool = option(True, "write the HTML report at the end", lr_find=False)
    sync_bn: bool = option(False, "SyncBatchNorm across processes under torchrun")
    budget: str | None = option(None, "wall time for the whole run (e.g. 90s, 15m, 2h): the epochs are set from the "
                                "measured speed of the first steps so that training, validation and the test scoring "
                                "end within it; overrides --epochs; a resumed run keeps the plan", "DURATION",
                                Duration(), lr_find=False)
    log: tuple[str, ...] = option((), "also mirror the run into experiment trackers: tensorboard, mlflow "
                                  "(comma-separated; needs attrfit[track])", "NAME,...", lr_find=False)


def leaf_fields(cls=TrainConfig, prefix: str = "") -> dict[str, tuple[type, object]]:
    """``{"optim.lr": (type, default), ...}`` for every leaf field."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out.update(leaf_fields(t, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = (t, f)
    return out


def flag_name(key: str) -> str | None:
    """The flag of a config key without its dashes (``optim.lr`` -> ``lr``); None for the positional CSV."""
    return flag_of(leaf_fields()[key][1])


def coerce(key: str, t, value):
    """Convert ``value`` (from a file or a flag string) to type ``t`` or raise a clear error."""
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(t)
        if value is None and type(None) in options:
            return None
        # "none"/"null" mean unset for numbers; for text they may be a value (``--stratify none``)
        words = ("",) if str in options else ("none", "null", "")
        if isinstance(value, str) and value.lower() in words and type(None) in options:
            return None
        errors = []
        for o in options:
            if o is type(None):
                continue
            try:
                return coerce(key, o, value)
            except AttrfitError as e:
                errors.append(str(e))
        raise AttrfitError(errors[0] if errors else f"{key}: bad value {value!r}")
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise AttrfitError(f"{key}: expected true or false, got {value!r}")
    if t in (int, float):
        if isinstance(value, bool):
            raise AttrfitError(f"{key}: expected a number, got {value!r}")
        try:
            v = t(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(1e400) from a config file
            raise AttrfitError(f"{key}: expected {'an integer' if t is int else 'a number'}, got {value!r}") from None
        if t is int and isinstance(value, float) and v != value:
            raise AttrfitError(f"{key}: expected an integer, got {value!r}")
        return v
    if t is str:
        if isinstance(value, (dict, list, bool)):  # a TOML true is not the text "True"
            raise AttrfitError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise AttrfitError(f"{key}: expected a list, got {value!r}")
        return tuple(str(v) for v in value)
    if origin is dict:
        return _coerce_weights(key, value)
    raise AttrfitError(f"{key}: unsupported type {t}")


def _coerce_weights(key: str, value) -> dict[str, float]:
    if isinstance(value, str):  # "gender=2,age=1"
        pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise AttrfitError(f"{key}: expected HEAD=WEIGHT pairs like gender=2,age=1, got {value!r}")
        value = {k.strip(): v for k, v in pairs}
    if not isinstance(value, dict):
        raise AttrfitError(f"{key}: expected HEAD=WEIGHT pairs, got {value!r}")
    return {str(k): coerce(f"{key}.{k}", float, v) for k, v in value.items()}


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    leaves = leaf_fields()
    dict_leaves = {k for k, (t, _) in leaves.items() if typing.get_origin(t) is dict}
    dict_flags = {flag_name(k) for k in dict_leaves}  # loss_weights = {...} at the top level, as --loss-weights
    for k, v in d.items():
        if isinstance(v, dict) and prefix + k not in dict_leaves and not (not prefix and k in dict_flags):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def apply(cfg: TrainConfig, overrides: dict[str, object], source: str = "override", check: bool = True) -> TrainConfig:
    """Return ``cfg`` with dotted-key overrides applied, type-checked and (unless ``check`` is False) range-checked.

    Example:
        >>> apply(TrainConfig(), {"lr": "0.1", "optim.momentum": 0.8}).optim.lr
        0.1
    """
    leaves = leaf_fields()
    by_flag = {flag_name(k): k for k in leaves if flag_name(k)}
    d = to_dict(cfg)
    for key, value in overrides.items():
        full = key if key in leaves else by_flag.get(key.replace("-", "_"))
        if full is None:
            close = difflib.get_close_matches(key, list(leaves) + list(by_flag), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise AttrfitError(f"{source}: unknown config key '{key}'{hint}")
        section, _, name = full.rpartition(".")
        target = d[section] if section else d
        target[name] = coerce(full, leaves[full][0], value)
    given = {k if k in leaves else by_flag.get(k.replace("-", "_")) for k in overrides}
    if "objective" in given and "monitor" not in given and cfg.monitor == OBJECTIVES.get(cfg.objective):
        d["monitor"] = OBJECTIVES.get(d["objective"], d["monitor"])  # the objective's monitor, unless chosen
    out = from_dict(d)
    if check:
        validate(out)
    return out


def to_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(d: dict) -> TrainConfig:
    """Rebuild a TrainConfig from :func:`to_dict` output (e.g. config.json of a run)."""
    hints = typing.get_type_hints(TrainConfig)
    kwargs = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name not in d:
            continue
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            sub = saved_fields(d[f.name]) if t is ModelConfig else d[f.name]
            sub_hints = typing.get_type_hints(t)
            kwargs[f.name] = t(**{k: coerce(f"{f.name}.{k}", sub_hints[k], v) for k, v in sub.items() if k in sub_hints})
        else:
            kwargs[f.name] = coerce(f.name, t, d[f.name])
    return TrainConfig(**kwargs)


def load_file(path: str | Path) -> dict[str, object]:
    """Read a TOML or YAML config file into flat dotted keys."""
    path = Path(path)
    if not path.is_file():
        raise AttrfitError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise AttrfitError("YAML config files need pyyaml: pip install 'attrfit[yaml]' (or use TOML)") from None
            data = yaml.safe_load(text) or {}
        else:
            import tomllib

            data = tomllib.loads(text)
    except AttrfitError:
        raise
    except Exception as e:
        raise AttrfitError(f"{path}: cannot parse config file ({e})") from None
    if not isinstance(data, dict):
        raise AttrfitError(f"{path}: the config file must hold a table of keys")
    return flatten(data)


def validate(cfg: TrainConfig) -> None:
    """Check every option against its field's range (see :mod:`attrfit.core.options`), then the pairs that interact.

    Example:
        >>> validate(apply(TrainConfig(), {"batch_size": 1}, check=False))
        Traceback (most recent call last):
        attrfit.core.errors.AttrfitError: --batch-size (config key batch_size) must be >= 2 (BatchNorm needs two or more images per batch), got 1
    """
    for key, (_, f) in leaf_fields().items():
        section, _, name = key.rpartition(".")
        check_value(key, flag_of(f), f, getattr(getattr(cfg, section) if section else cfg, name))
    d = cfg.data
    test = DEFAULT_TEST_FRACTION if d.test_fraction is None else d.test_fraction
    val = DEFAULT_VAL_FRACTION if d.val_fraction is None else d.val_fraction
    if test + val >= 1:
        raise AttrfitError(f"--test-fraction {test} + --val-fraction {val} leave no rows for "
                           "the train side; make their sum less than 1")
    if cfg.optim.class_weights and cfg.optim.logit_adjust > 0:
        raise AttrfitError("--class-weights and --logit-adjust both correct for how often each class occurs: "
                           "together they correct twice; use one (--no-class-weights, or --logit-adjust 0)")
