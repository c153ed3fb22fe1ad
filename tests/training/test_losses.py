
import pytest

import torch


from attrfit.training.losses import LossSpec, multi_head_loss

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_loss_skips_missing_labels():
    logits = (torch.randn(4, 3, requires_grad=True), torch.randn(4, 2, requires_grad=True))
    targets = torch.tensor([[0, -1], [1, -1], [2, -1], [0, -1]])
    spec = LossSpec([1.0, 1.0], [None, None])
    total, per_head = multi_head_loss(logits, targets, spec)
    assert per_head[1] == 0 and torch.isfinite(total)
    total.backward()
    assert logits[1].grad.abs().sum() == 0 and logits[0].grad.abs().sum() > 0
    # a missing label in a row does not change the other rows' loss
    t2 = targets.clone()
    t2[1, 0] = -1
    _, ph2 = multi_head_loss(logits, t2, spec)
    manual = torch.nn.functional.cross_entropy(logits[0][[0, 2, 3]], targets[[0, 2, 3], 0])
    assert torch.allclose(ph2[0], manual)


def test_loss_weights_apply():
    logits = (torch.randn(4, 3), torch.randn(4, 2))
    targets = torch.tensor([[0, 1], [1, 0], [2, 1], [0, 0]])
    t1, ph = multi_head_loss(logits, targets, LossSpec([2.0, 0.5], [None, None]))
    assert torch.allclose(t1, 2 * ph[0] + 0.5 * ph[1])
