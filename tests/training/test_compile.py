"""--compile (torch.compile): it trains, matches eager training, and a missing compiler is a clear error."""

import pytest
import torch

import attrfit.model.precision as precision
from attrfit.core.errors import AttrfitError
from attrfit.model import checkpoint
from attrfit.training.loop import fit
from helpers import tiny_cfg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_compiled_training_runs_and_matches_eager(tiny, tmp_path):
    # compiled modules raise on truth-testing (len()): `compiled or model` once crashed every --compile run
    compiled = fit(tiny_cfg(tiny, compile=True, epochs=2), run_dir=tmp_path / "c", progress=False)
    eager = fit(tiny_cfg(tiny, compile=False, epochs=2), run_dir=tmp_path / "e", progress=False)
    a, b = checkpoint.load(compiled / "last.pt")["model"], checkpoint.load(eager / "last.pt")["model"]
    assert a.keys() == b.keys()  # the state dict of the plain model, not the compiled wrapper's "_orig_mod." keys
    # fused kernels round differently, but two fp32 epochs stay within float noise of eager
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-4
    assert (compiled / "results.json").is_file()


def test_compile_without_a_cpp_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(precision.shutil, "which", lambda name: None)
    with pytest.raises(AttrfitError, match="C\\+\\+ compiler"):
        precision.check_compiler(torch.device("cpu"))
    precision.check_compiler(torch.device("cuda"))  # the GPU path compiles with triton, not g++
