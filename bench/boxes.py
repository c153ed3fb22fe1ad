"""Boxes on video frames: boxes/s from a folder of frames and from a video file against decoding alone (the
limit), and what averaging over a track gains over single boxes, on generated people.

    python bench/boxes.py           # about 2 minutes on 2 cores
    python bench/boxes.py --quick   # a smoke run: the figures mean nothing

Speed. A scene of 640 x 360 frames with ``--people`` demo people (:func:`attrfit.data.demo.render_person`)
walking across it, one box each per frame, written as JPEG frames (quality 90) and as an H.264 video
(libx264, CRF 20; MPEG-4 where the wheel lacks libx264). Timed, in rounds that alternate:

- decoding alone: every frame of the folder decoded to RGB as the frame source does
  (:func:`attrfit.data.cache.open_rgb`, in the pipeline's threads), and every frame of the video (PyAV, FFmpeg's threads),
  given as boxes/s (frames/s x boxes per frame): what no box pipeline on this decoder can beat;
- the model alone: :meth:`Predictor.predict_pixels` on the boxes' crops, cut beforehand;
- the whole of ``attrfit predict --boxes``: :meth:`Predictor.plan_boxes` then its rows streamed into
  CSV files (per box and per track) by :class:`attrfit.serving.predict.RowWriter`, from the folder and from
  the video. The model is the default ``cpu-small`` at ``--size`` (128x64 by default, the PETA setting),
  freshly initialised (its weights do not change the work), at the precision ``attrfit predict`` picks.

Accuracy. A model trained on the demo data (``--train-images`` at 64x32 with the demo's recipe for
``--train-budget``) predicts the boxes of ``--tracks`` generated tracks of ``--track-length`` boxes each
(true attributes drawn with the demo's frequencies, another seed than training), from an H.264 video, with
the detector's boxes jittered by 3% of their size. Two kinds of track:

- ``independent``: each box a new drawing of the person (clothes, background, placement, blur drawn anew;
  only the attributes kept): what averaging gains over views that share nothing but the attributes, an
  upper bound for a real track;
- ``same look``: one drawing per track, scaled and moved across the frames: views that differ only by
  scale, position, box jitter and the video's compression, a lower bound.

For each, per head: the accuracy of single boxes (every box against its track's truth), of the track's
answer (``--track-weight area``, the default), and of always answering the track set's most common class.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import common
from attrfit.data.cache import open_rgb, parse_size
from attrfit.data.crop import Box, crop_pixels
from attrfit.data.demo import HEAD_COLUMNS, REFERENCE_COUNTS, make_demo, render_person, sample_labels
from attrfit.data.frames import VideoFile
from attrfit.data.table import Schema
from attrfit.model.net import build_model
from attrfit.model.precision import guard_bf16, resolve_precision
from attrfit.recipe.config import TrainConfig
from attrfit.serving.boxes import BoxRow, box_columns, track_columns
from attrfit.serving.predict import Predictor, RowWriter

FRAME_H, FRAME_W = 360, 640
JITTER = 0.03  # the detector's box edges, as a share of the box's size (normal, per edge)
DEMO_RECIPE = {"class_weights": False, "monitor": "mean_accuracy", "mixup": 0.0, "brightness": 0.0, "contrast": 0.0,
               "ema": 0.0, "report": False}


# ---------------------------------------------------------------- the scene

def background(rng: np.random.Generator, n: int) -> list[Image.Image]:
    """Smooth coloured backgrounds (a coarse random grid upscaled) with pixel noise."""
    frames = []
    for _ in range(n):
        coarse = Image.fromarray(rng.integers(40, 200, (6, 10, 3), dtype=np.uint8)).resize((FRAME_W, FRAME_H),
                                                                                         Image.Resampling.BILINEAR)
        a = np.asarray(coarse, dtype=np.int16) + rng.integers(-8, 9, (FRAME_H, FRAME_W, 3), dtype=np.int16)
        frames.append(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)))
    return frames


def scene(n_tracks: int, slots: int, length: int, seed: int, same_look: bool):
    """Frames, MOT-layout box rows (N x 7) and the true classes of each track (T x heads).

    ``slots`` people are in view at once, side by side; each track lasts ``length`` frames, then the next
    track of its slot walks in.
    """
    truth = sample_labels(n_tracks, seed)
    rng = np.random.default_rng([seed, 7])
    frames = background(rng, math.ceil(n_tracks / slots) * length)
    rows = []
    slot_w = FRAME_W / slots
    for t in range(n_tracks):
        slot, start = t % slots, (t // slots) * length
        look = render_person(truth[t], np.random.default_rng([seed, 1, t]), (170, 85)) if same_look else None
        x0, y0, step = (slot + 0.5) * slot_w, rng.uniform(30, 150), rng.uniform(-20, 20) / length  # in view
        for k in range(length):
            h = int(rng.uniform(120, 170))
            w = h // 2
            x, y = min(max(0, int(x0 + step * k - w / 2)), FRAME_W - w), int(y0 + rng.uniform(-3, 3))
            person = look.resize((w, h), Image.Resampling.BILINEAR) if same_look else \
                render_person(truth[t], np.random.default_rng([seed, 2, t, k]), (h, w))
            frames[start + k].paste(person, (x, y))
            edges = rng.normal(0, JITTER, 4) * [w, h, w, h]
            rows.append([start + k + 1, t + 1, x + edges[0], y + edges[1], w + edges[2] - edges[0],
                         h + edges[3] - edges[1], 1.0])
    return frames, np.array(rows), truth


def write_frames(frames: list[Image.Image], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f, im in enumerate(frames, start=1):
        im.save(folder / f"{f:06d}.jpg", quality=90)
    return folder


def write_video(frames: list[Image.Image], path: Path) -> tuple[Path, str]:
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options={"crf": "20"} if codec == "libx264" else {})
        stream.width, stream.height, stream.pix_fmt = FRAME_W, FRAME_H, "yuv420p"
        for im in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(im)))
        container.mux(stream.encode())
    return path, codec


# ---------------------------------------------------------------- speed

def fresh_predictor(size: tuple[int, int], device: torch.device) -> Predictor:
    """The default model, freshly initialised, with the demo's heads, at the precision predict would pick."""
    schema = Schema(tuple(HEAD_COLUMNS), {h: tuple(REFERENCE_COUNTS[h]) for h in HEAD_COLUMNS})
    torch.manual_seed(0)
    model = build_model(TrainConfig().model, schema.num_classes).to(device).eval().to(memory_format=torch.channels_last)
    precision = resolve_precision("auto", device)
    guard_bf16(model, precision, device, size, None, [64])
    return Predictor(model, schema, size, "stretch", device, precision)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def decode_folder(folder: Path) -> None:
    """Every frame decoded, in as many threads as the box pipeline decodes them."""
    with ThreadPoolExecutor(min(8, (os.cpu_count() or 1) + 1)) as pool:
        list(pool.map(open_rgb, sorted(folder.iterdir())))


def decode_video(video: Path, n_frames: int) -> None:
    for _, load in VideoFile(video).read(range(1, n_frames + 1)):
        load()


def crop_all(pred: Predictor, source, rows: np.ndarray) -> None:
    """The box pipeline's input stage alone: frames decoded once and every box cut, in its threads, no model."""
    for _ in pred.plan_boxes(source, rows).crops():
        pass


def predict_all(pred: Predictor, source, rows: np.ndarray, out: Path) -> None:
    """What ``attrfit predict --boxes --out --tracks`` does once the model is loaded: rows streamed to CSVs."""
    job = pred.plan_boxes(source, rows)
    with open(out / "boxes.csv", "w", newline="") as fb, open(out / "tracks.csv", "w", newline="") as ft:
        writers = RowWriter(fb, "csv", box_columns(job.table, pred)), RowWriter(ft, "csv", track_columns(pred))
        for item in job.stream():
            writers[0 if isinstance(item, BoxRow) else 1].write(item.row)
        for w in writers:
            w.close()


def speed(args, work: Path, device: torch.device) -> dict:
    frames, rows, _ = scene(args.people, args.people, args.frames, seed=11, same_look=True)
    folder = write_frames(frames, work / "speed_frames")
    video, codec = write_video(frames, work / "speed.mp4")
    pred = fresh_predictor(parse_size(args.size), device)
    crops = torch.from_numpy(np.stack([crop_pixels(frames[int(r[0]) - 1], Box(*r[2:6]), pred.size, "stretch")
                                       for r in rows])).permute(0, 3, 1, 2)
    del frames
    pred.predict_pixels(crops[:64], 64)  # warm-up
    sides = {"decode frames (JPEG)": lambda: decode_folder(folder),
             "decode video": lambda: decode_video(video, args.frames),
             "decode + crop, frames": lambda: crop_all(pred, folder, rows),
             "decode + crop, video": lambda: crop_all(pred, video, rows),
             "model alone": lambda: pred.predict_pixels(crops, 64),
             "boxes from frames": lambda: predict_all(pred, folder, rows, work),
             "boxes from video": lambda: predict_all(pred, video, rows, work)}
    seconds = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            seconds[name].append(timed(fn))
    n = len(rows)
    rates = {name: [n / s for s in secs] for name, secs in seconds.items()}
    return {"boxes": n, "frames": args.frames, "boxes_per_frame": args.people, "frame_size": [FRAME_H, FRAME_W],
            "model_size": list(pred.size), "precision": pred.precision, "codec": codec,
            "boxes_per_s": rates, "median_boxes_per_s": {k: common.median(v) for k, v in rates.items()}}


# ---------------------------------------------------------------- accuracy

def train_model(args, work: Path) -> Path:
    import attrfit

    csv_path = make_demo(work / "demo", n=args.train_images, size=(128, 64), force=True)
    budget = {"epochs": 2} if args.quick else {"budget": args.train_budget}
    return attrfit.train(csv_path, run_dir=work / "run", size="64x32", progress=False, **DEMO_RECIPE, **budget)


def accuracy(args, work: Path, run: Path) -> dict:
    import attrfit

    pred = attrfit.load(run)
    out = {}
    for name, same in (("independent", False), ("same look", True)):
        frames, rows, truth = scene(args.tracks, args.slots, args.track_length, seed=101, same_look=same)
        video, codec = write_video(frames, work / f"acc_{same}.mp4")
        res = pred.predict_boxes(video, rows)
        out[name] = score(res, truth, pred) | {"codec": codec, "tracks": args.tracks, "boxes": len(rows)}
    return out


def score(res, truth: np.ndarray, pred: Predictor) -> dict:
    heads = {}
    for j, h in enumerate(HEAD_COLUMNS):
        classes = list(pred.schema.classes[h])
        true_name = [list(REFERENCE_COUNTS[h])[c] for c in truth[:, j]]
        boxes = [r[h] == true_name[r["track_id"] - 1] for r in res.boxes if not r["error"]]
        tracks = [r[h] == true_name[r["track_id"] - 1] for r in res.tracks if not r["error"]]
        majority = max(true_name.count(c) for c in classes) / len(true_name)
        heads[h] = {"box_accuracy": float(np.mean(boxes)), "track_accuracy": float(np.mean(tracks)),
                    "majority_accuracy": majority}
    mean = {k: float(np.mean([m[k] for m in heads.values()])) for k in next(iter(heads.values()))}
    lo, hi = gain_interval(res, truth)
    return {"heads": heads, "mean": mean, "gain": mean["track_accuracy"] - mean["box_accuracy"],
            "gain_ci95": [lo, hi]}


def gain_interval(res, truth: np.ndarray, resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean gain, resampling tracks: per track, over heads, its answer's
    accuracy minus its boxes' mean accuracy (a track's boxes share one draw of the person)."""
    names = [list(REFERENCE_COUNTS[h]) for h in HEAD_COLUMNS]
    right = lambda r: np.array([r[h] == names[j][truth[r["track_id"] - 1, j]] for j, h in enumerate(HEAD_COLUMNS)])
    box_acc: dict[int, list] = {}
    for r in res.boxes:
        if not r["error"]:
            box_acc.setdefault(r["track_id"], []).append(right(r))
    gains = np.array([right(t).mean() - np.mean(box_acc[t["track_id"]]) for t in res.tracks if not t["error"]])
    idx = np.random.default_rng(0).integers(0, len(gains), (resamples, len(gains)))
    means = gains[idx].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# ---------------------------------------------------------------- report

def tables(r: dict) -> list[str]:
    s = r["speed"]
    speed_rows = [[name, ", ".join(f"{v:.0f}" for v in rates), s["median_boxes_per_s"][name]]
                  for name, rates in s["boxes_per_s"].items()]
    out = [common.markdown_table(["pipeline", "boxes/s per round", "median boxes/s"], speed_rows),
           f"{s['boxes']} boxes on {s['frames']} frames of {FRAME_W} x {FRAME_H} ({s['boxes_per_frame']} a frame); "
           f"model cpu-small at {s['model_size'][0]}x{s['model_size'][1]}, {s['precision']}; video {s['codec']}; "
           "decoding given as boxes/s = frames/s x boxes per frame"]
    for name, a in r["accuracy"].items():
        rows = [[h, m["box_accuracy"], m["track_accuracy"], m["track_accuracy"] - m["box_accuracy"],
                 m["majority_accuracy"]] for h, m in [*a["heads"].items(), ("MEAN", a["mean"])]]
        lo, hi = a["gain_ci95"]
        out += [f"tracks, {name}: {a['tracks']} tracks, {a['boxes']} boxes, video {a['codec']}; mean gain "
                f"{a['gain']:+.3f} (95% bootstrap interval over tracks {lo:+.3f} to {hi:+.3f})",
                common.markdown_table(["head", "single box", "track", "gain", "majority"], rows)]
    return out


def main() -> int:
    p = common.base_parser(__doc__, "boxes")
    p.add_argument("--frames", type=int, default=150, help="frames of the speed scene (default 150)")
    p.add_argument("--people", type=int, default=8, help="people (boxes) in each frame of the speed scene (default 8)")
    p.add_argument("--size", default="128x64", help="the model's input size for the speed part (default 128x64)")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (default 3)")
    p.add_argument("--train-images", type=int, default=2000, help="demo images to train on (default 2000)")
    p.add_argument("--train-budget", default="45s", help="training wall time (default 45s)")
    p.add_argument("--tracks", type=int, default=128, help="tracks of each accuracy scene (default 128)")
    p.add_argument("--track-length", type=int, default=8, help="boxes per track (default 8)")
    p.add_argument("--slots", type=int, default=8, help="people in view at once in the accuracy scenes (default 8)")
    args = p.parse_args()
    common.apply_threads(args.threads)
    if args.quick:
        args.frames, args.people, args.rounds, args.size = 6, 4, 1, "64x32"
        args.train_images, args.tracks, args.track_length, args.slots = 120, 8, 3, 4
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="attrfit-bench-boxes-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        results = {"speed": speed(args, work, device), "accuracy": accuracy(args, work, train_model(args, work))}
        results["wall_s"] = time.perf_counter() - t0
    settings = {k: v for k, v in vars(args).items() if k not in ("out",)}
    common.report("boxes", args.out, tables(results),
                  {"machine": common.machine(device), "settings": settings, "results": results,
                   "cpu_count": os.cpu_count()})
    return 0


if __name__ == "__main__":
    raise SystemExit(common.run_main(main))
