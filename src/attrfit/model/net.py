"""The model: a small ResNet trunk with one linear head per attribute.

``AttrNet`` takes raw pixels (uint8 or float, 0..255, N x 3 x H x W, any H and W),
normalises them with stored per-channel mean/std buffers, runs a ResNet-style trunk
(stem conv, stages of BasicBlocks, global average pool) and returns one logits tensor
per attribute head. Everything the model needs to be rebuilt is in ``ModelConfig`` plus
``num_classes`` (and the normalisation buffers, which travel in the state dict).

Presets are sized by measurement (see the table in ``PRESETS``); ``count_flops`` gives
the forward FLOPs per image for throughput reports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attrfit.core.errors import AttrfitError
from attrfit.core.options import OneOf, Range, check_fields, option
from attrfit.data.augment import Normalise

# Named presets. Widths double per stage up to WIDTH_CAP_FACTOR * width.
# stem_stride 2 quarters the cost of everything after the stem; CPU presets need that
# (cpu-small: a bf16 channels_last training step at batch 64, 64x64, is ~0.1 s on 2 cores),
# GPU presets keep full resolution in the stem for accuracy on small images.
# cpu-small's patch stem skips the stem's full-resolution map, whose BatchNorm, ReLU and strided
# convolutions took 40% of a step for 20% of its FLOPs: 1.36x the training images/s on PETA, and
# equal or better balanced accuracy in the same wall time (docs/experiments/throughput.md).
PRESETS: dict[str, dict[str, int | str]] = {
    "cpu-small": {"width": 32, "depth": 1, "stages": 4, "stem_stride": 2, "stem": "patch"},
    "cpu-base": {"width": 32, "depth": 1, "stages": 4, "stem_stride": 1, "stem": "conv"},
    "gpu-base": {"width": 64, "depth": 2, "stages": 4, "stem_stride": 1, "stem": "conv"},
    "gpu-large": {"width": 96, "depth": 3, "stages": 4, "stem_stride": 1, "stem": "conv"},
}
STEMS = ("conv", "patch")
# Fields added after runs were saved, with the value those runs had (not today's preset's): a saved config
# or checkpoint without the field was written before it existed (read through saved_fields).
_FIELDS_BEFORE = {"stem": "conv"}
WIDTH_CAP_FACTOR = 8


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an :class:`AttrNet`; ``None`` fields come from the preset.

    Example:
        >>> ModelConfig().resolved()
        ModelConfig(preset='cpu-small', width=32, depth=1, stages=4, stem_stride=2, stem='patch', dropout=0.0)
    """

    preset: str = option("cpu-small", "model size preset; the options below override its parts",
                         "{" + ",".join(PRESETS) + "}", OneOf(*PRESETS))
    width: int | None = option(None, "channels after the stem and in the first stage", "N", Range(1, 1024),
                               default_text="from --preset")
    depth: int | None = option(None, "residual blocks per stage", "N", Range(1, 32), default_text="from --preset")
    stages: int | None = option(None, "stages; each halves the resolution and doubles the width (capped)", "N",
                                Range(1, 8), default_text="from --preset")
    stem_stride: int | None = option(None, "stride of the first convolution: 2 quarters the compute", "{1,2}",
                                     OneOf(1, 2), default_text="from --preset")
    stem: str | None = option(None, "first layer: 'conv' (3x3 at --stem-stride, then the first stage halves) or "
                              "'patch' (one non-overlapping conv straight to the first stage's resolution: the same "
                              "stage sizes where H and W divide by 2x --stem-stride, up to 3 border pixels dropped "
                              "otherwise; no full-resolution layer, faster)", "{" + ",".join(STEMS) + "}",
                              OneOf(*STEMS), default_text="from --preset")
    dropout: float = option(0.0, "dropout before the heads", "P", Range(0, 1, hi_open=True))

    def __post_init__(self) -> None:
        check_fields(self, "model")

    def resolved(self) -> ModelConfig:
        """Return a copy with every ``None`` filled from the preset, checked.

        Example:
            >>> ModelConfig(preset="gpu-base", depth=1).resolved().width
            64
        """
        if self.preset not in PRESETS:
            raise AttrfitError(
                f"unknown model preset {self.preset!r}; choose one of {', '.join(PRESETS)}"
            )
        base = PRESETS[self.preset]
        filled = {k: base[k] if getattr(self, k) is None else getattr(self, k) for k in base}
        cfg = dataclasses.replace(self, **filled)
        _check_config(cfg)
        return cfg


def saved_fields(saved: dict) -> dict:
    """The fields of a ModelConfig a run saved (config.json, a checkpoint), with the value it had for each
    field added since: the one reader of old runs' model settings.

    Example:
        >>> saved_fields({"preset": "cpu-small"})["stem"], saved_fields({"stem": "patch"})["stem"]
        ('conv', 'patch')
    """
    return {**_FIELDS_BEFORE, **saved}


def _check_config(cfg: ModelConfig) -> None:
    for name in ("width", "depth", "stages", "stem_stride"):  # a preset fills these, so None is not allowed here
        if not isinstance(getattr(cfg, name), int) or isinstance(getattr(cfg, name), bool):
            raise AttrfitError(f"model {name} must be an integer, got {getattr(cfg, name)!r}")
    check_fields(cfg, "model")


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that can be told to run in fp32 under autocast.

    ``force_fp32`` is set by :func:`attrfit.model.precision.guard_bf16` for layers whose bf16
    kernel is unsound on this machine; it is not part of the state dict (each machine
    checks for itself).
    """

    force_fp32 = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.force_fp32:
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    conv = Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride)
        self.conv2 = _conv_bn(c_out, c_out, 3, 1)
        reshape = stride != 1 or c_in != c_out
        # nn.Identity rather than None keeps forward free of Python branches (trace/ONNX).
        self.shortcut = _conv_bn(c_in, c_out, 1, stride) if reshape else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        return F.relu(out + self.shortcut(x))


def _stem(cfg: ModelConfig) -> Conv2d:
    if cfg.stem == "patch":  # the stem's and the first stage's strides in one k x k conv, stride k
        k = 2 * cfg.stem_stride
        return Conv2d(3, cfg.width, k, k, padding=0, bias=False)
    return Conv2d(3, cfg.width, 3, cfg.stem_stride, padding=1, bias=False)


def _make_trunk(cfg: ModelConfig) -> tuple[nn.Sequential, int]:
    """Stem + stages; returns the module and its output channel count."""
    width = cfg.width
    layers: list[nn.Module] = [_stem(cfg), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    c_in = width
    for stage in range(cfg.stages):
        c_out = min(width * 2**stage, width * WIDTH_CAP_FACTOR)
        halves = stage > 0 or cfg.stem == "conv"  # a patch stem has already halved for the first stage
        for block in range(cfg.depth):
            layers.append(BasicBlock(c_in, c_out, stride=2 if block == 0 and halves else 1))
            c_in = c_out
    return nn.Sequential(*layers), c_in


class AttrNet(nn.Module):
    """ResNet-style multi-head classifier on raw 0..255 pixels.

    ``forward(x)`` with x of shape N x 3 x H x W (uint8 or float, 0..255) returns a tuple
    of logits, one N x K_h tensor per head, in head order.

    Example:
        >>> net = build_model(ModelConfig(width=8, stages=2), [3, 2])
        >>> [t.shape for t in net(torch.zeros(2, 3, 32, 24, dtype=torch.uint8))]
        [torch.Size([2, 3]), torch.Size([2, 2])]
    """

    def __init__(
        self,
        cfg: ModelConfig,
        num_classes: list[int],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.cfg = cfg.resolved()
        self.num_classes = [int(k) for k in num_classes]
        # 1 x 3 x 1 x 1, in 0..255 pixel units; buffers so they travel with the state dict.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.trunk, features = _make_trunk(self.cfg)
        self.dropout = nn.Dropout(self.cfg.dropout)
        self.heads = nn.ModuleList(nn.Linear(features, k) for k in self.num_classes)
        _init_weights(self)

    def features(self, x: Tensor, normalised: bool = False) -> Tensor:
        """Pooled trunk features, N x C, from raw 0..255 pixels (or pixels already normalised: see forward)."""
        if not normalised:
            x = x if x.dtype == torch.uint8 else x.float()  # uint8 is converted within the next op
            x = torch.addcmul(-self.mean / self.std, x, 1.0 / self.std)  # (x - mean) / std in one pass
        # Global average pool as a plain mean: no size-1 special case for torch.export.
        return self.trunk(x).mean(dim=(2, 3))

    def forward(self, x: Tensor, normalised: bool = False) -> tuple[Tensor, ...]:
        """Logits per head from raw pixels; ``normalised=True`` takes (pixels - mean) / std made by the caller
        (training folds it into the augmentation's pass: :meth:`normalisation`)."""
        f = self.dropout(self.features(x, normalised))
        return tuple([head(f) for head in self.heads])

    def normalisation(self) -> Normalise:
        """The per-channel mean and std this model normalises its input with (0..255 units)."""
        return Normalise(self.mean, self.std)

    def input_dtype(self, compute: torch.dtype) -> torch.dtype:
        """The dtype the first layer takes under autocast to ``compute``: float32 where the bf16 self-check
        kept that layer in fp32 (:func:`attrfit.model.precision.guard_bf16`)."""
        return torch.float32 if self.trunk[0].force_fp32 else compute

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Two optimizer groups: conv/linear weights decay; BN params and biases do not.

        Example:
            >>> net = build_model(ModelConfig(width=8, stages=1), [2])
            >>> [g["weight_decay"] for g in net.param_groups(5e-4)]
            [0.0005, 0.0]
        """
        decay, no_decay = [], []
        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                weighted = isinstance(module, (nn.Conv2d, nn.Linear)) and name == "weight"
                (decay if weighted else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]


def _init_weights(net: nn.Module) -> None:
    """He-normal init for conv and linear; BN 1/0; the last BN of each block 0.

    Convs use fan_out (as torchvision's ResNet). Heads use fan_in: fan_out of a 2-class
    head would give weights of std 1 and logits in the tens at step 0.
    """
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            mode = "fan_out" if isinstance(m, nn.Conv2d) else "fan_in"
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in net.modules():
        if isinstance(m, BasicBlock):
            # Each block starts as the identity: deep nets train like shallow ones early on.
            nn.init.zeros_(m.conv2[1].weight)


def build_model(
    cfg: ModelConfig,
    num_classes: list[int],
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5),
    std: tuple[float, float, float] = (64.0, 64.0, 64.0),
) -> AttrNet:
    """Build an :class:`AttrNet` (seed torch first for reproducible init).

    Example:
        >>> net = build_model(ModelConfig(), [4, 2, 7])
        >>> net.cfg.width, net.num_classes
        (32, [4, 2, 7])
    """
    if not num_classes or any(int(k) < 1 for k in num_classes):
        raise AttrfitError(f"every head needs at least one class, got {list(num_classes)}")
    return AttrNet(cfg, num_classes, mean, std)


def count_flops(model: nn.Module, size: tuple[int, int] = (64, 64)) -> int:
    """Forward FLOPs per image (2 x multiply-accumulates) of all Conv2d and Linear layers.

    Runs one 1-image forward in eval mode under ``no_grad`` with hooks; the model's
    training flag and state are left as they were. Size is (H, W).

    Example:
        >>> net = build_model(ModelConfig(width=8, stages=2), [2])
        >>> count_flops(net, (64, 64)) > 0
        True
    """
    total = [0]

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        # MACs per output value = one filter's size (in/groups x kh x kw, or in_features).
        total[0] += 2 * module.weight[0].numel() * out[0].numel()

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0]
