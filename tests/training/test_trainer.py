
import pytest

import torch


from attrfit.training.trainer import epoch_order

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_epoch_order_pure():
    assert torch.equal(epoch_order(50, 0, 3), epoch_order(50, 0, 3))
    assert not torch.equal(epoch_order(50, 0, 3), epoch_order(50, 0, 4))
