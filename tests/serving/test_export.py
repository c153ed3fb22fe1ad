import json
import sys
import warnings

import numpy as np
import pytest
import torch

import attrfit
from attrfit import cli
from attrfit.core.errors import AttrfitError
from attrfit.serving.export import export_model, output_names
from attrfit.serving.predict import stack_pixels

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ATOL = 1e-4  # fp32 PyTorch vs the exported graph


@pytest.fixture(scope="module")
def trained(trained_tiny):
    """(run folder, labels CSV): pytest's session-wide tiny run (conftest.trained_tiny)."""
    return trained_tiny


@pytest.fixture(scope="module")
def reference(trained):
    """Prepared pixels of 10 real images (uint8 N x 3 x H x W) and PyTorch's probabilities for them."""
    run, labels = trained
    predictor = attrfit.load(run)
    paths = [labels.parent / f"img/{i}.png" for i in range(10)]
    pixels = stack_pixels([predictor.prepare(p) for p in paths]).contiguous()
    return pixels, predictor.predict(paths)


def check_schema(path, predictor_spec):
    schema = json.loads(path.read_text())
    assert schema["heads"] == ["color", "bright"]
    assert schema["classes"] == predictor_spec["classes"]
    assert schema["size"] == [16, 16] and schema["resize"] == "stretch"
    assert schema["normalisation"]["mean"] == predictor_spec["mean"]
    assert schema["normalisation"]["std"] == predictor_spec["std"]
    assert [o["name"] for o in schema["outputs"]] == ["color", "bright"]
    return schema


def test_torchscript_matches_pytorch(trained, reference, tmp_path):
    run, _ = trained
    pixels, expected = reference
    e = export_model(run, tmp_path / "model.pt")
    assert e.max_abs_diff is not None and e.max_abs_diff <= ATOL
    schema = check_schema(tmp_path / "model.pt.schema.json", attrfit.load(run).spec())
    assert schema["format"] == "torchscript"
    extra = {"attrfit_schema.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in recent torch
        model = torch.jit.load(str(tmp_path / "model.pt"), _extra_files=extra)
    assert json.loads(extra["attrfit_schema.json"]) == schema
    with torch.no_grad():
        from_uint8, from_float = model(pixels), model(pixels.float())
    assert list(from_uint8) == ["color", "bright"]
    for head, probs in expected.probs.items():
        np.testing.assert_allclose(from_uint8[head].numpy(), probs, atol=ATOL)
        np.testing.assert_allclose(from_float[head].numpy(), probs, atol=ATOL)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_onnx_matches_pytorch(trained, reference, tmp_path, dtype):
    ort = pytest.importorskip("onnxruntime", reason="ONNX export is the optional extra: pip install 'attrfit[export]'")
    onnx = pytest.importorskip("onnx", reason="ONNX export is the optional extra: pip install 'attrfit[export]'")
    run, _ = trained
    pixels, expected = reference
    e = export_model(run, tmp_path / "model.onnx", input_dtype=dtype)
    assert e.max_abs_diff is not None and e.max_abs_diff <= ATOL
    schema = check_schema(tmp_path / "model.onnx.schema.json", attrfit.load(run).spec())
    assert schema["format"] == "onnx" and schema["input"]["dtype"] == dtype
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(props["attrfit_schema"]) == schema
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and inp.type == f"tensor({'float' if dtype == 'float32' else dtype})"
    assert inp.shape[1:] == [3, 16, 16] and isinstance(inp.shape[0], str)  # dynamic batch axis
    assert [o.name for o in session.get_outputs()] == ["color", "bright"]
    got = session.run(None, {"images": pixels.numpy().astype(dtype)})
    assert got[0].shape == (10, 3)
    for out, head in zip(got, ["color", "bright"]):
        np.testing.assert_allclose(out, expected.probs[head], atol=ATOL)


def test_output_names_are_sanitised_and_unique():
    assert output_names(["gender", "age group", "2nd", "age-group", "images"]) == [
        "gender", "age_group", "h_2nd", "age_group_2", "images_2"]


def test_missing_onnx_says_how_to_install(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(AttrfitError, match=r"pip install 'attrfit\[export\]'"):
        export_model(trained[0], tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "model.onnx.schema.json").exists()


def test_export_command(trained, tmp_path, capsys):
    run, _ = trained
    assert cli.main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.bin")]) == 0
    out = capsys.readouterr().out
    assert "input 'images' uint8 or float32 N x 3 x 16 x 16" in out and "outputs color, bright" in out
    assert "largest |exported - PyTorch|" in out and (tmp_path / "m.bin.schema.json").is_file()
    assert cli.main(["export", str(run), "--out", str(tmp_path / "model.xyz")]) == 2
    assert "--format onnx or torchscript" in capsys.readouterr().err
