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

from attrfit.augment import AugmentConfig
from attrfit.dataset import DataConfig
from attrfit.errors import AttrfitError
from attrfit.model import ModelConfig
from attrfit.schedule import ScheduleConfig


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "sgd"  # sgd (Nesterov momentum) | adamw
    lr: float | str = 0.2  # max LR of the schedule, or "auto" (LR range test first)
    momentum: float = 0.9  # SGD momentum (one-cycle cycles it between schedule.momentum_min/max)
    nesterov: bool = True
    weight_decay: float = 5e-4  # L2, on conv/linear weights only (not BatchNorm, not biases)
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    label_smoothing: float = 0.0
    class_weights: bool = False  # inverse-frequency class weights per head (from the train side)
    loss_weights: dict[str, float] = field(default_factory=dict)  # head -> weight (default 1)
    ema: float = 0.0  # EMA decay of weights for evaluation (e.g. 0.999); 0 = off


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 12
    batch_size: int = 128  # global batch size (split across processes under torchrun)
    seed: int = 0  # model init, batch order, augmentation
    monitor: str = "mean_accuracy"  # mean_accuracy | mean_balanced_accuracy: picks the best epoch
    precision: str = "auto"  # auto (bf16 where fast, else fp32) | bf16 | fp16 | fp32
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 = torch default
    eval_batch_size: int = 512
    checkpoint_every: int = 0  # also write last.pt every N steps inside an epoch; 0 = each epoch only
    init_from: str | None = None  # start from these weights (a checkpoint or run folder), new schedule
    report: bool = True  # write the HTML report at the end
    sync_bn: bool = False  # SyncBatchNorm under torchrun
    log: tuple[str, ...] = ()  # experiment trackers to mirror the run into: tensorboard, mlflow (attrfit.tracking)


MONITORS = ("mean_accuracy", "mean_balanced_accuracy")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")

# Flags whose name is not simply the field name.
FLAG_NAMES = {
    "schedule.kind": "schedule",
    "data.split_seed": "split_seed",
    "data.csv": None,  # positional
}


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
    if key in FLAG_NAMES:
        return FLAG_NAMES[key]
    return key.rsplit(".", 1)[-1]


def coerce(key: str, t, value):
    """Convert ``value`` (from a file or a flag string) to type ``t`` or raise a clear error."""
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(t)
        if value is None and type(None) in options:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null", "") and type(None) in options:
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
        except (TypeError, ValueError):
            raise AttrfitError(f"{key}: expected {'an integer' if t is int else 'a number'}, got {value!r}") from None
        if t is int and isinstance(value, float) and v != value:
            raise AttrfitError(f"{key}: expected an integer, got {value!r}")
        return v
    if t is str:
        if isinstance(value, (dict, list)):
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
    for k, v in d.items():
        if isinstance(v, dict) and prefix + k not in leaf_fields():
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def apply(cfg: TrainConfig, overrides: dict[str, object], source: str = "override") -> TrainConfig:
    """Return ``cfg`` with dotted-key overrides applied, type-checked."""
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
    return from_dict(d)


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
            sub = d[f.name]
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
    if cfg.monitor not in MONITORS:
        raise AttrfitError(f"monitor '{cfg.monitor}' unknown; choose one of {', '.join(MONITORS)}")
    if cfg.precision not in PRECISIONS:
        raise AttrfitError(f"precision '{cfg.precision}' unknown; choose one of {', '.join(PRECISIONS)}")
    if cfg.optim.optimizer not in ("sgd", "adamw"):
        raise AttrfitError(f"optimizer '{cfg.optim.optimizer}' unknown; choose sgd or adamw")
    if isinstance(cfg.optim.lr, str) and cfg.optim.lr != "auto":
        raise AttrfitError(f"lr must be a number or 'auto', got '{cfg.optim.lr}'")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise AttrfitError("epochs and batch-size must be at least 1")
