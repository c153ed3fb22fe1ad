"""Export a trained model for serving without attrfit, as ONNX or TorchScript.

The exported model takes RGB pixels N x 3 x H x W at the checkpoint's size with values 0..255
(uint8 or float; an ONNX file declares one, ``input_dtype``), normalises them inside, and returns
one softmax probability tensor N x K per head, named after the head (``output_names``), with the
run's temperatures applied (the probabilities ``attrfit predict`` writes). Beside ``FILE`` goes
``FILE.schema.json``: heads, classes, input size, resize mode, normalisation, the output names and
the decision rules (``decision``: temperatures, train priors, the prior-correction strength, the
thresholds, the run's default rule; :func:`decision_schema`); the same JSON is embedded in the file
(ONNX metadata ``attrfit_schema``, TorchScript extra file ``attrfit_schema.json``). A client holding
only the file and its schema reproduces ``attrfit predict`` under every rule (bench/schema_client.py).

Images must be prepared as in training (:meth:`attrfit.serving.predict.Predictor.prepare`): EXIF rotation,
RGB with alpha composited on grey 127, PIL bilinear resize to H x W ("stretch"), or keeping the
aspect ratio and padding with grey 127 ("pad").

ONNX uses torch's TorchScript-based exporter (``dynamo=False``): it works from torch 2.2 to 2.13
and needs only the ``onnx`` package (the dynamo exporter also needs ``onnxscript``). TorchScript
uses ``torch.jit.trace``; torch >= 2.10 marks both deprecated but ships them. After writing, the
file is loaded back (torch.jit / onnxruntime) and run on a batch; :class:`Exported` reports the
largest difference from PyTorch.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from attrfit.core.version import __version__

from attrfit.model import checkpoint

from attrfit.core import files, outputs
from attrfit.core.errors import AttrfitError
from attrfit.serving.predict import Predictor

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
SUFFIX_FORMAT = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}
INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
INPUT_NAME = "images"
OPSET = 17  # onnxruntime >= 1.14 runs it
CHECK_IMAGES = 8  # batch run through the exported file after writing (not the trace batch size: checks the dynamic axis)
TOLERANCE = 1e-4  # largest |exported - PyTorch| probability accepted without a warning
INSTALL_HINT = "pip install 'attrfit[export]'"


class ProbabilityModel(nn.Module):
    """An AttrNet returning ``{output name: N x K softmax probabilities}`` from 0..255 pixels N x 3 x H x W,
    each head's logits divided by its temperature first (None: the model's own softmax)."""

    def __init__(self, net: nn.Module, names: list[str], temperatures: list[float] | None = None) -> None:
        super().__init__()
        self.net = net
        self.names = list(names)
        self.temperatures = None if temperatures is None else [float(t) for t in temperatures]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        logits = [z.float() for z in self.net(x)]
        if self.temperatures is not None:
            logits = [z / t for z, t in zip(logits, self.temperatures)]
        return {name: z.softmax(1) for name, z in zip(self.names, logits)}


@dataclass(frozen=True)
class Exported:
    path: Path
    schema_path: Path
    max_abs_diff: float | None  # exported vs PyTorch probabilities on CHECK_IMAGES images; None if not checked


def output_names(heads: list[str]) -> list[str]:
    """Head names as graph output names: letters, digits and '_', not starting with a digit, unique.

    Example:
        >>> output_names(["gender", "age group", "2nd"])
        ['gender', 'age_group', 'h_2nd']
    """
    names: list[str] = []
    for h in heads:
        name = re.sub(r"\W", "_", h, flags=re.ASCII) or "head"
        name = "h_" + name if name[0].isdigit() else name
        base, k = name, 2
        while name in names or name == INPUT_NAME:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def export_model(checkpoint_or_run: str | os.PathLike, out: str | os.PathLike, fmt: str | None = None,
                 input_dtype: str = "uint8", force: bool = False) -> Exported:
    """Write ``out`` (ONNX or TorchScript; ``fmt`` defaults from the suffix) and ``out.schema.json``.

    Neither replaces an existing file without ``force``, nor ever the checkpoint or a file of its run.
    Both are complete when written (see :mod:`attrfit.core.files`): a full disk leaves the old files or none.

    Example:
        >>> e = export_model("runs/demo", "demo.onnx")  # doctest: +SKIP
        >>> e.schema_path, e.max_abs_diff  # doctest: +SKIP
        (PosixPath('demo.onnx.schema.json'), 5.96e-08)
    """
    out = Path(out)
    fmt = fmt or SUFFIX_FORMAT.get(out.suffix.lower())
    if fmt not in FORMATS:
        raise AttrfitError(f"{out}: say --format onnx or torchscript (or use a .onnx / .pt file name)")
    if input_dtype not in INPUT_DTYPES:
        raise AttrfitError(f"input dtype {input_dtype!r} unknown; choose one of {', '.join(INPUT_DTYPES)}")
    schema_path = out.with_name(out.name + ".schema.json")
    source = checkpoint.resolve(checkpoint_or_run)
    for path in (out, schema_path):
        outputs.check_output(path, force, outputs.Protected.of_runs([source]), what="exported model")
    predictor = Predictor.from_checkpoint(source, device="cpu")
    net = predictor.model.float().to(memory_format=torch.contiguous_format).eval()
    names = output_names(list(predictor.schema.heads))
    temperatures = predictor.decisions.temperatures() if predictor.decisions else None
    wrapper = ProbabilityModel(net, names, temperatures).eval()
    text = json.dumps(export_schema(predictor, fmt, out, names, input_dtype), indent=1)
    example = _pixels(2, predictor.size, INPUT_DTYPES[input_dtype], seed=0)
    # Serialised in memory, written by Python: torch's own file writer aborts the process on a full disk.
    data = _onnx_bytes(wrapper, example, names, text) if fmt == "onnx" else _torchscript_bytes(wrapper, example, text)
    with files.atomic_open(out, "the exported model") as f, files.atomic_open(schema_path, "the schema") as g:
        f.write(data)  # both files are complete on disk before either is renamed into place
        g.write((text + "\n").encode())
    check = _pixels(CHECK_IMAGES, predictor.size, INPUT_DTYPES[input_dtype], seed=1)
    return Exported(out, schema_path, _check(wrapper, out, fmt, check))


def export_schema(predictor: Predictor, fmt: str, out: Path, names: list[str], input_dtype: str) -> dict:
    """The JSON written beside (and into) the exported file."""
    spec = predictor.spec()
    h, w = predictor.size
    return {
        "attrfit_version": __version__,
        "format": fmt,
        "file": out.name,
        "checkpoint": predictor.checkpoint,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, h, w],
            "dtype": input_dtype if fmt == "onnx" else "uint8 or float32",
            "layout": "NCHW, RGB",
            "range": "0..255 pixel values, not 0..1: the model normalises internally",
        },
        "outputs": [{"name": n, "head": hd, "classes": spec["classes"][hd], "shape": ["batch", len(spec["classes"][hd])],
                     "meaning": "softmax probabilities, columns in classes order"}
                    for n, hd in zip(names, spec["heads"])],
        "heads": spec["heads"],
        "classes": spec["classes"],
        "size": [h, w],
        "resize": predictor.resize,
        "preprocessing": ("open the file (a JPEG may decode in draft mode at no less than 2W x 2H); EXIF-rotate; "
                          "convert to 8-bit RGB (16-bit and float images scaled to 0..255, transparent pixels on "
                          "grey 127); 'stretch': resize the whole image to W x H with PIL bilinear, reducing_gap 2.0; "
                          "'pad': resize it so to max(1, round(width s)) x max(1, round(height s)), s = min(W / width, "
                          "H / height), and paste it at ((W - w) // 2, (H - h) // 2) on a W x H canvas of grey 127"),
        "normalisation": {"mean": spec["mean"], "std": spec["std"],
                          "applied": "inside the model: (x - mean) / std per RGB channel, 0..255 units"},
        "decision": decision_schema(predictor),
    }


def decision_schema(predictor: Predictor) -> dict:
    """How a client turns the outputs into labels under each rule (see :mod:`attrfit.evaluation.decisions`)."""
    from attrfit.evaluation.decisions import MOST_PROBABLE, PRIOR_CORRECTED, THRESHOLD_CRITERIA

    d, heads = predictor.decisions, predictor.schema.heads
    how = {MOST_PROBABLE: "argmax of the probabilities",
           PRIOR_CORRECTED: "argmax of log(p) - strength * log(prior) (float64)",
           **{r: "binary heads with a threshold: classes[positive] if p[positive] >= threshold, else the other "
                 "class; other heads: as prior-corrected" for r in THRESHOLD_CRITERIA}}
    if d is None:  # a run without decisions.json: its own softmax, the most probable class
        return {"rule": MOST_PROBABLE, "rules": {MOST_PROBABLE: how[MOST_PROBABLE]},
                "temperatures": {h: 1.0 for h in heads}}
    return {"rule": d.rule, "objective": d.objective, "rules": {r: how[r] for r in d.rules()},
            "temperatures": {h: x.temperature for h, x in d.heads.items()},
            "outputs": "softmax(logits / temperature): the temperatures are applied inside the model",
            "prior": {h: list(x.prior) for h, x in d.heads.items()}, "strength": d.strength,
            "thresholds": {h: {"positive": x.positive, **x.thresholds} for h, x in d.heads.items() if x.thresholds},
            "fitted_on": dataclasses.asdict(d.fitted_on)}


def _pixels(n: int, size: tuple[int, int], dtype: torch.dtype, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *size), generator=g, dtype=torch.uint8).to(dtype)


def _onnx_bytes(wrapper: nn.Module, example: Tensor, names: list[str], schema_text: str) -> bytes:
    try:
        import onnx
    except ImportError:
        raise AttrfitError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from None
    # torch >= 2.9 defaults to the dynamo exporter (needs onnxscript); older torch has no `dynamo` argument.
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(wrapper, (example,), buf, input_names=[INPUT_NAME], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *names]}, opset_version=OPSET, **legacy)
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    onnx.helper.set_model_props(model, {"attrfit_schema": schema_text})
    return model.SerializeToString()


def _torchscript_bytes(wrapper: nn.Module, example: Tensor, schema_text: str) -> bytes:
    # Traced on uint8: the cast to float inside the model is recorded as a cast, so float input works too.
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(wrapper, (example,), strict=False)
        torch.jit.save(traced, buf, _extra_files={"attrfit_schema.json": schema_text})
    return buf.getvalue()


def _check(wrapper: nn.Module, path: Path, fmt: str, x: Tensor) -> float | None:
    """Largest |exported - PyTorch| probability on ``x``; None (and a warning) without onnxruntime."""
    with torch.no_grad():
        expected = {k: v.numpy() for k, v in wrapper(x).items()}
    if fmt == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            got = {k: v.numpy() for k, v in torch.jit.load(str(path))(x).items()}
    else:
        try:
            import onnxruntime
        except ImportError:
            log.warning("onnxruntime is not installed, so %s was not checked against PyTorch (%s)", path, INSTALL_HINT)
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {INPUT_NAME: x.numpy()})))
    diff = max(float(np.abs(got[k] - v).max()) for k, v in expected.items())
    if diff > TOLERANCE:
        log.warning("%s differs from PyTorch by up to %.2g (tolerance %g); check it before serving it", path, diff, TOLERANCE)
    return diff
