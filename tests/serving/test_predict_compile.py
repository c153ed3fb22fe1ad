"""predict --compile: a frozen torch.compile of the model predicts what the eager model does, one batch shape."""

import pytest
import torch

import attrfit
from attrfit import cli
from attrfit.core.errors import AttrfitError
from attrfit.serving import predict
from attrfit.model import precision

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def pixels(trained_tiny):
    torch.manual_seed(0)
    h, w = attrfit.load(trained_tiny[0]).size
    return torch.randint(0, 256, (5, 3, h, w), dtype=torch.uint8)


def test_compiled_predictions_match_eager_with_padded_batches(trained_tiny, pixels, monkeypatch):
    run = trained_tiny[0]
    eager, compiled = attrfit.load(run), attrfit.load(run, compile=True)
    assert compiled.compiled and hasattr(compiled.model, "_orig_mod")  # the torch.compile wrapper
    seen = []
    real = predict.predict_probs
    monkeypatch.setattr(predict, "predict_probs", lambda model, x, *a, **k: seen.append(len(x)) or real(model, x, *a, **k))
    a, b = eager.predict_pixels(pixels, batch_size=4), compiled.predict_pixels(pixels, batch_size=4)
    assert seen == [5, 8]  # the compiled model sees whole batches only: 5 images padded to 2 batches of 4
    assert len(b) == 5 and b.labels == a.labels
    for h in a.heads:  # fp32 run: folding BatchNorm into the weights only rounds differently
        assert torch.allclose(torch.from_numpy(b.probs[h]), torch.from_numpy(a.probs[h]), atol=1e-4)
    assert compiled.spec() == eager.spec()  # attributes of the model reach through the compiled wrapper


def test_predict_cli_compile(trained_tiny, tmp_path):
    run, labels = trained_tiny
    images = [str(labels.parent / f"img/{i}.png") for i in range(3)]
    out_eager, out_compiled = tmp_path / "e.csv", tmp_path / "c.csv"
    assert cli.main(["predict", str(run), *images, "--out", str(out_eager), "--quiet"]) == 0
    assert cli.main(["predict", str(run), *images, "--out", str(out_compiled), "--quiet", "--compile"]) == 0
    first_columns = [[line.split(",")[:2] for line in f.read_text().splitlines()] for f in (out_eager, out_compiled)]
    assert first_columns[0] == first_columns[1]  # same images, same predicted class of the first head


def test_compile_without_a_cpp_compiler_is_a_clear_error(trained_tiny, monkeypatch, capsys, tmp_path):
    run, labels = trained_tiny
    monkeypatch.setattr(precision.shutil, "which", lambda name: None)
    with pytest.raises(AttrfitError, match="C\\+\\+ compiler"):
        attrfit.load(run, compile=True)
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(run), str(labels.parent / "img/0.png"), "--compile", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("attrfit: error:") == 1 and "C++ compiler" in err and not out.exists()
