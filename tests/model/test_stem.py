"""The patch stem (--stem patch): the stages see the maps they see with the conv stem, and runs saved
before the option existed still rebuild with the stem they were trained with."""

import pytest
import torch
from torch import nn

from attrfit.model.checkpoint import ModelArgs
from attrfit.model.net import BasicBlock, ModelConfig, build_model, count_flops
from attrfit.recipe.config import from_dict, to_dict, TrainConfig


def stage_shapes(net, size):
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])) and None)
             for m in net.trunk if isinstance(m, BasicBlock)]
    net.eval()(torch.zeros(2, 3, *size, dtype=torch.uint8))
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("stem_stride", [1, 2])
@pytest.mark.parametrize("size", [(128, 64), (64, 64), (32, 16)])
def test_patch_stem_gives_every_stage_the_conv_stems_map(size, stem_stride):
    conv = build_model(ModelConfig(stem="conv", stem_stride=stem_stride, stages=3), [2])
    patch = build_model(ModelConfig(stem="patch", stem_stride=stem_stride, stages=3), [2])
    assert stage_shapes(patch, size) == stage_shapes(conv, size)
    stem = patch.trunk[0]
    assert stem.kernel_size == stem.stride == (2 * stem_stride,) * 2 and stem.padding == (0, 0)
    # the first block keeps the resolution and the width: an identity shortcut, no strided convs
    first = patch.trunk[3]
    assert isinstance(first.shortcut, nn.Identity) and first.conv1[0].stride == (1, 1)


def test_patch_stem_on_sizes_that_do_not_divide_drops_the_border():
    # 30x22 with a 4x4 stride-4 stem: 7x5 (the last 2 rows and columns are not seen), where the 3x3
    # stem's padding gives 8x6; no error, and each later stage halves as before
    patch = build_model(ModelConfig(stem="patch", stages=3), [2])
    conv = build_model(ModelConfig(stem="conv", stages=3), [2])
    assert [s[1:] for s in stage_shapes(patch, (30, 22))] == [(7, 5), (4, 3), (2, 2)]
    assert [s[1:] for s in stage_shapes(conv, (30, 22))] == [(8, 6), (4, 3), (2, 2)]


def test_patch_stem_flops_by_hand():
    # stem 3->8 as a 2x2 stride-2 conv to 4x4; block 8->8 stride 1 at 4x4 (two 3x3, identity); head 8->2
    net = build_model(ModelConfig(width=8, depth=1, stages=1, stem_stride=1, stem="patch"), [2])
    assert count_flops(net, (8, 8)) == 2 * 12 * 8 * 16 + 2 * (2 * 72 * 8 * 16) + 2 * 8 * 2


def test_runs_saved_before_the_stem_option_rebuild_their_conv_stem(monkeypatch):
    import attrfit.model.net as net_module

    # whatever a preset says today, a config or checkpoint without the field was a conv-stem run
    monkeypatch.setitem(net_module.PRESETS, "cpu-small", {**net_module.PRESETS["cpu-small"], "stem": "patch"})
    saved = to_dict(TrainConfig())
    del saved["model"]["stem"]
    assert from_dict(saved).model.resolved().stem == "conv"
    cfg = {k: v for k, v in vars(ModelConfig().resolved()).items() if k != "stem"}
    model = ModelArgs(cfg, [2], [127.5] * 3, [64.0] * 3).build()
    assert model.trunk[0].kernel_size == (3, 3) and model.cfg.stem == "conv"
    assert build_model(ModelConfig(), [2]).cfg.stem == "patch"  # the monkeypatched preset itself
