"""``attrfit export``: ONNX or TorchScript with its schema."""

from __future__ import annotations

import json

from attrfit.cli.args import add_run_arg
from attrfit.serving.export import CHECK_IMAGES, FORMATS, INPUT_DTYPES, INPUT_NAME, export_model


def register(sub) -> None:
    p = sub.add_parser("export", help="write the model as ONNX or TorchScript, with its schema as JSON beside it")
    add_run_arg(p)
    p.add_argument("--out", required=True, metavar="FILE", help="file to write, e.g. model.onnx or model.pt; FILE.schema.json goes beside it")
    p.add_argument("--format", choices=FORMATS, help="default: from --out's suffix (.onnx; .pt or .ts for torchscript)")
    p.add_argument("--force", action="store_true", help="replace an existing FILE and FILE.schema.json")
    p.add_argument("--input-dtype", choices=list(INPUT_DTYPES), default="uint8",
                   help="the ONNX input's type, pixels 0..255 either way (default uint8; TorchScript takes both)")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    e = export_model(args.run, args.out, args.format, args.input_dtype, force=args.force)
    schema = json.loads(e.schema_path.read_text())
    h, w = schema["size"]
    print(f"wrote {e.path} ({schema['format']}; input '{INPUT_NAME}' {schema['input']['dtype']} N x 3 x {h} x {w}, "
          f"0..255 RGB; outputs {', '.join(o['name'] for o in schema['outputs'])})")
    print(f"schema {e.schema_path}")
    if e.max_abs_diff is not None:
        print(f"check: largest |exported - PyTorch| probability on {CHECK_IMAGES} images = {e.max_abs_diff:.2g}")
    return 0
