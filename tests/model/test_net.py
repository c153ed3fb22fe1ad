"""AttrNet: shapes, init, optimizer groups, layouts/precision, rebuild, FLOPs, learning."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attrfit.core.errors import AttrfitError
from attrfit.model.net import PRESETS, AttrNet, ModelConfig, build_model, count_flops

TINY = ModelConfig(width=8, stages=2)
HEADS = [3, 5, 2]


def _images(n, h, w, seed=0, dtype=torch.uint8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g).to(dtype)


def test_resolved_fills_from_preset_and_keeps_overrides():
    cfg = ModelConfig(preset="gpu-base", depth=1).resolved()
    assert (cfg.width, cfg.depth, cfg.stages) == (PRESETS["gpu-base"]["width"], 1, 4)
    assert cfg.resolved() == cfg


def test_unknown_preset_lists_presets():
    with pytest.raises(AttrfitError, match="cpu-small.*gpu-large"):
        ModelConfig(preset="huge").resolved()


def test_bad_sizes_rejected():
    with pytest.raises(AttrfitError, match="width"):
        ModelConfig(width=0).resolved()
    with pytest.raises(AttrfitError, match="at least one class"):
        build_model(TINY, [3, 0])


@pytest.mark.parametrize("size", [(64, 32), (128, 64), (37, 53)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_output_shapes_per_head(size, dtype):
    net = build_model(TINY, HEADS).eval()
    out = net(_images(4, *size, dtype=dtype))
    assert isinstance(out, tuple)
    assert [tuple(t.shape) for t in out] == [(4, k) for k in HEADS]
    assert all(t.dtype == torch.float32 for t in out)


def test_uint8_and_float_inputs_agree():
    net = build_model(TINY, HEADS).eval()
    x = _images(3, 32, 32)
    for a, b in zip(net(x), net(x.float())):
        torch.testing.assert_close(a, b)


def test_he_init_and_zero_gamma():
    torch.manual_seed(0)
    net = build_model(ModelConfig(), HEADS)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    big = max(convs, key=lambda m: m.weight.numel())
    fan_out = big.out_channels * big.kernel_size[0] * big.kernel_size[1]
    assert big.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.02)
    head = net.heads[1]  # linear heads: He with fan_in (keeps first logits O(1))
    assert head.weight.std().item() == pytest.approx(math.sqrt(2 / head.in_features), rel=0.3)
    blocks = [m for m in net.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 4
    assert all(torch.all(b.conv2[1].weight == 0) for b in blocks)
    assert all(torch.all(b.conv1[1].weight == 1) for b in blocks)


def test_param_groups_split_and_cover_every_parameter_once():
    net = build_model(ModelConfig(), HEADS)
    decay, no_decay = net.param_groups(5e-4)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (5e-4, 0.0)
    decay_ids = {id(p) for p in decay["params"]}
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert not decay_ids & no_decay_ids
    assert decay_ids | no_decay_ids == {id(p) for p in net.parameters()}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))
    for m in net.modules():
        for name, p in m.named_parameters(recurse=False):
            if isinstance(m, nn.BatchNorm2d) or name == "bias":
                assert id(p) in no_decay_ids, (m, name)
            else:
                assert isinstance(m, (nn.Conv2d, nn.Linear)) and id(p) in decay_ids, (m, name)


def test_channels_last_and_bf16_autocast_train_step():
    torch.manual_seed(0)
    net = build_model(TINY, HEADS)
    x = _images(8, 64, 32)
    ref = [t.detach() for t in net.eval()(x)]
    net = net.to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)
    for a, b in zip(net(xcl), ref):  # same numbers in either layout
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(xcl)
        loss = sum(F.cross_entropy(o.float(), torch.zeros(8, dtype=torch.long)) for o in out)
    loss.backward()
    assert out[0].dtype == torch.bfloat16 and torch.isfinite(loss)
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = net.eval()(xcl)
    for a, b in zip(low, ref):  # bf16 is close to fp32, not garbage
        assert torch.corrcoef(torch.stack([a.float().flatten(), b.flatten()]))[0, 1] > 0.98


def test_normalised_input_skips_the_models_own_normalisation():
    """What training feeds (augment_batch with the model's Normalise) gives what raw pixels give."""
    from attrfit.data.augment import augment_batch, AugmentConfig

    torch.manual_seed(0)
    net = build_model(TINY, HEADS, mean=(90.0, 110.0, 130.0), std=(40.0, 50.0, 60.0)).eval()
    x = _images(4, 32, 16)
    off = AugmentConfig(flip=False, translate=0, brightness=0, contrast=0)
    made = augment_batch(x, off, torch.Generator(), net.normalisation())
    for a, b in zip(net(made, normalised=True), net(x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(net(made)[0], net(x)[0])  # normalising twice is not the same


def test_input_dtype_follows_the_first_layers_precision():
    net = build_model(TINY, HEADS)
    assert net.input_dtype(torch.bfloat16) == torch.bfloat16
    net.trunk[0].force_fp32 = True  # what the bf16 self-check does to a faulty layer
    assert net.input_dtype(torch.bfloat16) == torch.float32


def test_rebuild_from_cfg_and_load_state_dict_strict():
    torch.manual_seed(0)
    net = build_model(TINY, HEADS, mean=(100.0, 110.0, 120.0), std=(50.0, 60.0, 70.0))
    net(_images(4, 32, 32).float())  # train-mode forward moves BN running stats
    state = net.state_dict()
    torch.manual_seed(1)
    twin = build_model(net.cfg, list(net.num_classes))
    twin.load_state_dict(state, strict=True)
    assert isinstance(twin, AttrNet) and twin.cfg == net.cfg
    torch.testing.assert_close(twin.mean.flatten(), torch.tensor([100.0, 110.0, 120.0]))
    x = _images(2, 48, 40, seed=3)
    for a, b in zip(net.eval()(x), twin.eval()(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_trace_follows_input_size():
    net = build_model(TINY, HEADS).eval()
    traced = torch.jit.trace(net, _images(2, 64, 32))
    x = _images(3, 40, 56, seed=5)
    for a, b in zip(traced(x), net(x)):
        torch.testing.assert_close(a, b)


def test_export_with_dynamic_batch_and_size():
    from torch.export import Dim

    net = build_model(TINY, HEADS).eval()
    # Sides must exceed the total stride (8 here): torch.export specialises size-1 maps.
    side = {"min": 16, "max": 1024}
    dims = ({0: Dim("n"), 2: Dim("h", **side), 3: Dim("w", **side)},)
    exported = torch.export.export(net, (_images(2, 64, 32),), dynamic_shapes=dims)
    x = _images(3, 40, 56, seed=5)
    for a, b in zip(exported.module()(x), net(x)):
        torch.testing.assert_close(a, b)


def test_count_flops_by_hand():
    # stem 3->8 3x3 at 8x8; block 8->8 stride 2 at 4x4 (two 3x3 + 1x1 shortcut); head 8->2
    net = build_model(ModelConfig(width=8, depth=1, stages=1, stem_stride=1, stem="conv"), [2])
    stem = 2 * 27 * 8 * 64
    block = 2 * (2 * 72 * 8 * 16) + 2 * 8 * 8 * 16
    assert count_flops(net, (8, 8)) == stem + block + 2 * 8 * 2


def test_count_flops_scales_with_area_and_leaves_model_alone():
    net = build_model(ModelConfig(), HEADS).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    small, large = count_flops(net, (64, 32)), count_flops(net, (128, 64))
    assert small > 0
    assert 3.9 < large / small <= 4.0  # convs x4 exactly; heads do not grow
    assert net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_tiny_model_overfits_tiny_batch():
    torch.manual_seed(0)
    net = build_model(ModelConfig(width=8, depth=1, stages=2), [4, 3])
    x = _images(16, 32, 32, seed=1)
    g = torch.Generator().manual_seed(2)
    ys = [torch.randint(0, k, (16,), generator=g) for k in net.num_classes]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = sum(F.cross_entropy(o, y) for o, y in zip(net(x), ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses
    net.eval()
    correct = [(o.argmax(1) == y).float().mean().item() for o, y in zip(net(x), ys)]
    assert min(correct) >= 0.9, correct
