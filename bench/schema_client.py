"""A client of an exported attrfit model, written from its schema alone: onnxruntime, numpy and Pillow, no torch
and no attrfit (docs/decisions.md). It reproduces `attrfit predict RUN IMAGE... --decide RULE`: the same image
preparation, the same (temperature-scaled) probabilities and, under each decision rule, the same labels.

    attrfit export RUN --out model.onnx          # writes model.onnx and model.onnx.schema.json
    python bench/schema_client.py model.onnx img1.jpg img2.png --decide prior-corrected [--out pred.csv]

Output: CSV with image_path, then per head its label and the label's probability (HEAD, HEAD_prob),
as `attrfit predict` writes them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

GREY = 127  # the schema's pad and alpha background


def load_schema(model: Path) -> dict:
    return json.loads(Path(f"{model}.schema.json").read_text(encoding="utf-8"))


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit and float images scaled to 0..255, transparent pixels on grey."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, (GREY, GREY, GREY, 255)), im).convert("RGB")
    return im.convert("RGB")


def prepare(path: Path, schema: dict) -> np.ndarray:
    """One image file as the model's H x W x 3 uint8 input, by the schema's size and resize mode."""
    h, w = schema["size"]
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (2 * w, 2 * h))  # a big JPEG decodes at a reduced scale, never below twice the size
        im = to_rgb(ImageOps.exif_transpose(im))
    box = (0, 0, im.width, im.height)
    if schema["resize"] == "stretch":
        return np.asarray(im.resize((w, h), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0))
    s = min(w / im.width, h / im.height)  # "pad": keep the aspect ratio, centre on grey
    sw, sh = max(1, round(im.width * s)), max(1, round(im.height * s))
    canvas = Image.new("RGB", (w, h), (GREY, GREY, GREY))
    canvas.paste(im.resize((sw, sh), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0), ((w - sw) // 2, (h - sh) // 2))
    return np.asarray(canvas)


def decide(schema: dict, rule: str, head: str, probs: np.ndarray) -> np.ndarray:
    """Class indices of one head's N x K probabilities under ``rule`` (the schema's "decision")."""
    d = schema["decision"]
    if rule not in d["rules"]:
        raise SystemExit(f"schema_client: rule {rule!r} is not one of {', '.join(d['rules'])}")
    p = probs.astype(np.float64)
    if rule == "most-probable":
        return p.argmax(1)
    threshold = d["thresholds"].get(head, {})
    if rule in threshold:
        positive = threshold["positive"]
        return np.where(p[:, positive] >= threshold[rule], positive, 1 - positive)
    prior = np.asarray(d["prior"][head], np.float64)
    return (np.log(np.maximum(p, np.finfo(np.float64).tiny)) - d["strength"] * np.log(prior)).argmax(1)


def predict(model: Path, images: list[Path], rule: str | None = None, batch: int = 64) -> list[dict]:
    """One row per image: image_path, and per head its label and that label's probability."""
    import onnxruntime

    schema = load_schema(model)
    rule = rule or schema["decision"]["rule"]
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    dtype = np.float32 if schema["input"]["dtype"] == "float32" else np.uint8
    rows = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        x = np.stack([prepare(p, schema).transpose(2, 0, 1) for p in chunk]).astype(dtype)
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {schema["input"]["name"]: x})))
        part = [{"image_path": str(p)} for p in chunk]
        for out in schema["outputs"]:
            probs = outputs[out["name"]]
            index = decide(schema, rule, out["head"], probs)
            for row, k, p in zip(part, index, probs):
                row[out["head"]] = out["classes"][k]
                row[f"{out['head']}_prob"] = round(float(p[k]), 6)
        rows += part
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="the exported .onnx file (its .schema.json beside it)")
    ap.add_argument("images", type=Path, nargs="+", help="image files")
    ap.add_argument("--decide", help="decision rule (default: the schema's)")
    ap.add_argument("--out", type=Path, help="CSV to write (default: stdout)")
    args = ap.parse_args()
    rows = predict(args.model, args.images, args.decide)
    with open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
