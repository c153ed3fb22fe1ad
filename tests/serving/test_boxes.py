"""Attributes of the people in a video: a tracker's boxes on frames (a folder or a video), per box and per track.

The frames are drawn here: people-like figures (head, shirt, two legs) at known boxes on a noisy
background, each track with a known shirt colour and trouser shade. A tiny model learns those two
attributes from generated crops in about two seconds (the demo's attributes need minutes: bench/boxes.py
uses them), so per-track answers can be checked exactly. Crops are checked against training's resize
(:func:`attrfit.data.cache.resize_image` and the cache's decoder) on the same pixels.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import PLAIN_RECIPE, assert_one_error, cli
from PIL import Image, ImageDraw

import attrfit
from attrfit.core.errors import AttrfitError
from attrfit.data.cache import PAD_VALUE, decode_image, resize_image
from attrfit.data.crop import Box, crop_pixels, crop_resize
from attrfit.serving.boxes import BoxRow, TrackRow, plan_boxes
from attrfit.serving.box_crops import BoxOptions

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SHIRTS = {"red": (200, 35, 35), "green": (35, 165, 45), "blue": (45, 65, 215)}
LEGS = {"dark": (30, 30, 35), "light": (225, 220, 200)}
FRAME_H, FRAME_W, N_FRAMES = 120, 160, 12
# track id: shirt, legs, x at frame 1, y, x step per frame. Track 3 walks out of the frame on the right:
# at frames 8 to 10 (x = 139, 146, 153) it reaches past the border, at 11 and 12 (x = 160, 167) it lies outside.
TRACKS = {1: ("red", "dark", 4, 20, 6), 2: ("green", "light", 120, 60, -7), 3: ("blue", "dark", 90, 10, 7)}
FIG_W, FIG_H = 24, 48
NO_AV = "PyAV (the [video] extra) is not installed: pip install 'attrfit[video]'"


# ---------------------------------------------------------------- generated data

def background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """Grey noise: no colour a shirt could be mistaken for."""
    a = rng.normal(120, 18, (h, w, 1)).repeat(3, 2) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def paint_figure(draw: ImageDraw.ImageDraw, box: tuple, shirt: str, legs: str) -> None:
    """A person-like figure filling ``box`` (x, y, w, h): head, shirt, two legs."""
    x, y, w, h = box
    cx = x + w / 2
    draw.ellipse([cx - 0.18 * w, y, cx + 0.18 * w, y + 0.18 * h], fill=(230, 190, 150))
    draw.rectangle([x + 0.12 * w, y + 0.2 * h, x + 0.88 * w, y + 0.56 * h], fill=SHIRTS[shirt])
    draw.rectangle([x + 0.2 * w, y + 0.56 * h, cx - 0.04 * w, y + h], fill=LEGS[legs])
    draw.rectangle([cx + 0.04 * w, y + 0.56 * h, x + 0.8 * w, y + h], fill=LEGS[legs])


def write_training_crops(root: Path, n: int = 90) -> Path:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        shirt, legs = list(SHIRTS)[i % 3], list(LEGS)[(i // 3) % 2]
        im = background(rng, FIG_H, FIG_W)
        jitter = (rng.uniform(-2, 2), rng.uniform(-2, 2), FIG_W + rng.uniform(-3, 3), FIG_H + rng.uniform(-4, 3))
        paint_figure(ImageDraw.Draw(im), jitter, shirt, legs)
        im.save(root / f"img/{i}.png")
        rows.append({"image_path": f"img/{i}.png", "shirt": shirt, "legs": legs})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root / "labels.csv"


def track_box(tid: int, frame: int) -> tuple[int, int, int, int]:
    _, _, x0, y0, dx = TRACKS[tid]
    return x0 + dx * (frame - 1), y0, FIG_W, FIG_H


def draw_frames(n: int = N_FRAMES, seed: int = 1) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    frames = []
    for f in range(1, n + 1):
        im = background(rng, FRAME_H, FRAME_W)
        for tid, (shirt, legs, *_) in TRACKS.items():
            paint_figure(ImageDraw.Draw(im), track_box(tid, f), shirt, legs)
        frames.append(im)
    return frames


def mot_lines(n: int = N_FRAMES, extra: str = "0.9,-1,-1,-1") -> list[str]:
    """One line per box, by frame: ``frame,id,x,y,w,h,conf,...`` as MOTChallenge trackers write them."""
    return [f"{f},{tid},{','.join(map(str, track_box(tid, f)))},{extra}" for f in range(1, n + 1) for tid in TRACKS]


def write_video(path: Path, frames: list, codec: str, pix_fmt: str, **options) -> Path:
    av = pytest.importorskip("av", reason=NO_AV)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10, options=options)
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, pix_fmt
        for im in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(im)))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def figures_run(tmp_path_factory) -> Path:
    """A tiny model that has learned shirt colour and trouser shade (held-out accuracy checked)."""
    from attrfit.recipe.config import TrainConfig, apply
    from attrfit.training.loop import fit

    root = tmp_path_factory.mktemp("figures")
    labels = write_training_crops(root / "data")
    cfg = apply(TrainConfig(), {**PLAIN_RECIPE, "data.csv": str(labels), "size": "32x16", "width": 8, "stages": 2,
                                "epochs": 8, "batch_size": 16, "lr": 0.05, "report": False, "precision": "fp32",
                                "data.cache_dir": str(root / "cache")})
    run = fit(cfg, run_dir=root / "run", progress=False)
    assert json.loads((run / "results.json").read_text())["mean"]["accuracy"] >= 0.9  # it learned the task
    return run


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, Path, list[Image.Image]]:
    """(folder of frames 000001.png..., MOT boxes file, the frames)."""
    root = tmp_path_factory.mktemp("scene")
    frames = draw_frames()
    (root / "img1").mkdir()
    for f, im in enumerate(frames, start=1):
        im.save(root / f"img1/{f:06d}.png")
    (root / "gt.txt").write_text("\n".join(mot_lines()) + "\n")
    return root / "img1", root / "gt.txt", frames


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def predicted(run, frames, boxes, *extra, capsys=None, tmp: Path) -> tuple[list[dict], list[dict], str]:
    out, tracks = tmp / "boxes.csv", tmp / "tracks.csv"
    code, _, err = cli(capsys, "predict", run, "--boxes", boxes, "--frames", frames, "--out", out, "--tracks", tracks,
                       "--quiet", *extra)
    assert code == 0, err
    return read_csv(out), read_csv(tracks), err


# ---------------------------------------------------------------- per track: the painted attributes

def test_tracks_from_a_folder_of_frames_have_their_painted_attributes(figures_run, scene, tmp_path, capsys, caplog):
    folder, boxes, _ = scene
    rows, tracks, _ = predicted(figures_run, folder, boxes, capsys=capsys, tmp=tmp_path)
    assert len(rows) == 3 * N_FRAMES and [int(r["line"]) for r in rows] == list(range(1, 3 * N_FRAMES + 1))
    assert {int(t["track_id"]): (t["shirt"], t["legs"]) for t in tracks} == {k: v[:2] for k, v in TRACKS.items()}
    by_id = {int(t["track_id"]): t for t in tracks}
    assert [(by_id[k]["first_frame"], by_id[k]["last_frame"], by_id[k]["boxes"]) for k in TRACKS] == \
        [("1", str(N_FRAMES), str(N_FRAMES))] * 3
    assert by_id[3]["predicted"] == "10" and by_id[1]["predicted"] == "12"  # two of track 3's boxes lie outside
    # every box wholly inside its frame is right on its own here: the model learned these attributes (a box
    # mostly outside, grey where the frame ends, need not be: its track's average still is)
    inside = [r for r in rows if r["clipped"] == "False"]
    assert len(inside) == 31 and all((r["shirt"], r["legs"]) == TRACKS[int(r["track_id"])][:2] for r in inside)
    outside = [r for r in rows if r["error"]]
    assert [(r["frame"], r["track_id"]) for r in outside] == [("11", "3"), ("12", "3")]
    assert all("outside its frame" in r["error"] and r["shirt"] == "" for r in outside)
    clipped = [(r["frame"], r["track_id"]) for r in rows if r["clipped"] == "True"]
    assert clipped == [(str(f), "3") for f in range(8, 13)]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("5 of 36 boxes reach outside their frame (first: " in m and "gt.txt:24)" in m for m in warned), warned


def test_the_api_returns_the_rows_the_command_line_writes(figures_run, scene, tmp_path, capsys):
    folder, boxes, frames = scene
    rows, tracks, _ = predicted(figures_run, folder, boxes, "--all-probs", capsys=capsys, tmp=tmp_path)
    res = attrfit.load(figures_run).predict_boxes(folder, boxes, all_probs=True)
    assert _as_text(res.boxes) == rows and _as_text(res.tracks) == tracks
    assert res.stats.clipped == 5 and res.stats.failed == 2
    # images in memory and MOT-layout rows give the same rows
    rows_in_memory = np.array([[float(v) for v in line.split(",")[:7]] for line in mot_lines()])
    again = attrfit.load(figures_run).predict_boxes(frames, rows_in_memory, all_probs=True)
    assert _as_text(again.tracks) == tracks


def test_json_output_holds_the_same_rows(figures_run, scene, tmp_path, capsys):
    folder, boxes, _ = scene
    rows, tracks, _ = predicted(figures_run, folder, boxes, capsys=capsys, tmp=tmp_path / "c")
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", boxes, "--frames", folder, "--tracks",
                       tmp_path / "t.json", "--quiet")
    assert code == 0, err
    assert _as_text(json.loads((tmp_path / "t.json").read_text())) == tracks
    assert not (tmp_path / "boxes.csv").exists()  # --tracks alone: only the tracks are written


def _as_text(rows: list[dict]) -> list[dict]:
    """Rows as the CSV writer writes them (probabilities rounded to 6 decimals)."""
    def text(v):
        return "" if v is None else str(round(v, 6) if isinstance(v, float) else v)
    return [{k: text(v) for k, v in r.items()} for r in rows]


def test_a_track_averages_its_boxes_by_area_inside_the_frame_or_by_confidence(figures_run, scene, tmp_path):
    folder, _, _ = scene
    lines = mot_lines(extra="")
    confs = [0.2 + 0.05 * k for k in range(len(lines))]
    boxes = tmp_path / "gt.txt"
    boxes.write_text("\n".join(f"{line}{c}" for line, c in zip(lines, confs)) + "\n")
    model = attrfit.load(figures_run)
    for weight in ("area", "confidence", "equal"):
        res = model.predict_boxes(folder, boxes, weight=weight, all_probs=True)
        rows = [r for r in res.boxes if r["track_id"] == 3 and not r["error"]]
        x = np.array([r["x"] for r in rows], dtype=float)
        w = {"area": (np.minimum(x + FIG_W, FRAME_W) - x) * FIG_H, "confidence": np.array([r["conf"] for r in rows]),
             "equal": np.ones(len(rows))}[weight]
        p = np.array([[r[f"shirt_prob_{c}"] for c in SHIRTS] for r in rows])
        track = res.track(3)
        assert track["weight"] == pytest.approx(w.sum())
        assert [track[f"shirt_prob_{c}"] for c in SHIRTS] == pytest.approx((w @ p) / w.sum(), abs=1e-6)
    assert w[-1] < w[0] or weight == "equal"  # the clipped box weighs less by area (checked in the loop above)


def test_every_label_goes_through_the_predictors_decision_rule(figures_run, scene):
    folder, boxes, _ = scene
    model = attrfit.load(figures_run)
    model.decide = lambda head, probs: probs.argmin(1)  # a rule plugged in: the least probable class
    res = model.predict_boxes(folder, boxes)
    assert {r["track_id"]: r["shirt"] for r in res.tracks} != {k: v[0] for k, v in TRACKS.items()}
    first = next(r for r in res.boxes if not r["error"])
    assert first["shirt"] != TRACKS[first["track_id"]][0] and first["shirt_prob"] < 1 / 3
    assert model.predict(np.asarray(draw_frames(1)[0])).confidence["shirt"][0] < 1 / 3  # images too


def test_decide_reaches_every_box_and_track(figures_run, scene, tmp_path, capsys, caplog):
    """``predict --boxes --decide RULE``: a threshold above every probability makes 'legs' the other class on every
    box and track, and the probabilities written are the run's temperature-scaled ones."""
    import shutil

    run = shutil.copytree(figures_run, tmp_path / "run")
    d = json.loads((run / "decisions.json").read_text())
    classes = json.loads((run / "schema.json").read_text())["classes"]["legs"]
    positive = d["heads"]["legs"]["positive"]
    d["heads"]["legs"]["thresholds"] = {"threshold-balanced": 0.5, "threshold-f1": 1.5}
    d["heads"]["shirt"]["temperature"] = 3.0
    (run / "decisions.json").write_text(json.dumps(d))
    folder, boxes, _ = scene
    caplog.set_level("INFO", logger="attrfit")
    rows, tracks, _ = predicted(run, folder, boxes, "--decide", "threshold-f1", capsys=capsys, tmp=tmp_path)
    good = [r for r in rows if not r["error"]]
    assert len(good) > 30 and {r["legs"] for r in good + tracks} == {classes[1 - positive]}
    assert "labels by decision rule threshold-f1" in caplog.text
    (tmp_path / "plain").mkdir()
    plain, _, _ = predicted(figures_run, folder, boxes, capsys=capsys, tmp=tmp_path / "plain")
    pairs = [(r, q) for r, q in zip(rows, plain) if not r["error"]]
    assert all(float(r["shirt_prob"]) < float(q["shirt_prob"]) for r, q in pairs)  # softened by T = 3


# ---------------------------------------------------------------- video files

def test_a_lossless_video_gives_the_rows_of_its_frames(figures_run, scene, tmp_path, capsys):
    folder, boxes, frames = scene
    video = write_video(tmp_path / "scene.mkv", frames, "ffv1", "bgr0")  # FFV1 keeps RGB exactly
    from_folder = predicted(figures_run, folder, boxes, "--all-probs", capsys=capsys, tmp=tmp_path / "a" )
    from_video = predicted(figures_run, video, boxes, "--all-probs", capsys=capsys, tmp=tmp_path / "b")
    assert from_video[:2] == from_folder[:2]


def test_a_lossy_video_keeps_every_tracks_attributes(figures_run, scene, tmp_path, capsys):
    _, boxes, frames = scene
    video = write_video(tmp_path / "scene.avi", frames, "mpeg4", "yuv420p", qscale="3")
    a = np.asarray(frames[0], dtype=float)
    import av

    with av.open(str(video)) as c:  # lossy, but close: mean absolute error under 8 of 255 per pixel
        assert np.abs(next(c.decode(video=0)).to_ndarray(format="rgb24") - a).mean() < 8
    rows, tracks, _ = predicted(figures_run, video, boxes, capsys=capsys, tmp=tmp_path)
    assert {int(t["track_id"]): (t["shirt"], t["legs"]) for t in tracks} == {k: v[:2] for k, v in TRACKS.items()}


def test_a_video_is_decoded_once_in_order_with_boxes_of_several_frames_in_one_batch(figures_run, scene, tmp_path,
                                                                                     monkeypatch):
    _, boxes, frames = scene
    video = write_video(tmp_path / "scene.mkv", frames, "ffv1", "bgr0")
    model = attrfit.load(figures_run)
    batches = []
    real = model.predict_pixels
    monkeypatch.setattr(model, "predict_pixels", lambda x, *a: batches.append(len(x)) or real(x, *a))
    import av

    decoded = []
    real_decode = av.container.InputContainer.decode
    monkeypatch.setattr(av.container.InputContainer, "decode",
                        lambda self, *a, **k: (decoded.append(1) or f for f in real_decode(self, *a, **k)))
    model.predict_boxes(video, boxes)
    assert batches == [3 * N_FRAMES - 2]  # all frames' boxes in one batch (two lie outside their frame)
    assert len(decoded) == N_FRAMES  # every frame decoded once


def test_a_video_stops_decoding_after_the_last_frame_a_box_needs(figures_run, scene, tmp_path):
    _, _, frames = scene
    video = write_video(tmp_path / "scene.mkv", frames, "ffv1", "bgr0")
    (tmp_path / "b.txt").write_text("\n".join(mot_lines(3)) + "\n")
    job = attrfit.load(figures_run).plan_boxes(video, tmp_path / "b.txt")
    assert sum(isinstance(r, TrackRow) for r in job.stream()) == 3 and job.source.decoded == 3


def test_without_pyav_a_video_asks_for_the_extra(figures_run, scene, tmp_path, capsys, monkeypatch):
    _, boxes, _ = scene
    (tmp_path / "v.mp4").write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", boxes, "--frames", tmp_path / "v.mp4")
    assert_one_error(code, err, "needs PyAV", "pip install 'attrfit[video]'")


# ---------------------------------------------------------------- the crop rule is training's resize

def random_frame(seed: int, h: int = 90, w: int = 130) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


SIZES = [(32, 16), (64, 32), (24, 24), (16, 40)]


@pytest.mark.parametrize("size", SIZES)
def test_a_stretch_crop_equals_the_cache_decoding_the_box_as_an_image(tmp_path, size):
    """Cut out, saved as a PNG and decoded by the training cache's decoder, a box gives its crop's pixels."""
    frame = random_frame(0)
    rng = np.random.default_rng(1)
    for k in range(20):
        bw, bh = int(rng.integers(4, 60)), int(rng.integers(4, 80))
        x, y = int(rng.integers(0, frame.width - bw + 1)), int(rng.integers(0, frame.height - bh + 1))
        frame.crop((x, y, x + bw, y + bh)).save(tmp_path / "box.png")
        assert (crop_pixels(frame, Box(x, y, bw, bh), size, "stretch") ==
                decode_image(tmp_path / "box.png", size, "stretch")).all()


@pytest.mark.parametrize("size", SIZES)
def test_a_pad_crop_equals_the_cache_decoding_its_widened_region_as_an_image(tmp_path, size):
    """Pad mode: the box scaled by s = 1/f fills the output one way and is centred the other, ``j`` output pixels
    of margin on each side; the region the output shows (the box and f * j pixels of frame on each side) cut out,
    saved and decoded by the cache gives the crop's pixels. Boxes are drawn so that every bound is a whole pixel."""
    frame = random_frame(2, 260, 260)
    rng = np.random.default_rng(3)
    h, w = size
    for k in range(20):
        f, tall = int(rng.integers(1, 4)), bool(k % 2)
        if tall:  # full width, shorter than the aspect ratio asks: margins above and below
            j = int(rng.integers(0, h // 2))
            bw, bh, mx, my = w * f, (h - 2 * j) * f, 0, j * f
        else:
            j = int(rng.integers(0, w // 2))
            bw, bh, mx, my = (w - 2 * j) * f, h * f, j * f, 0
        x, y = int(rng.integers(mx, frame.width - bw - mx + 1)), int(rng.integers(my, frame.height - bh - my + 1))
        frame.crop((x - mx, y - my, x + bw + mx, y + bh + my)).save(tmp_path / "region.png")
        assert (crop_pixels(frame, Box(x, y, bw, bh), size, "pad") ==
                decode_image(tmp_path / "region.png", size, "pad")).all(), (f, j, tall)


def test_a_box_of_the_whole_frame_is_trainings_letterbox(tmp_path):
    """The letterbox as training made it before the rule was shared, written out here as the reference."""
    def letterbox(im, size):
        h, w = size
        scale = min(w / im.width, h / im.height)
        nw, nh = max(1, round(im.width * scale)), max(1, round(im.height * scale))
        canvas = Image.new("RGB", (w, h), (PAD_VALUE,) * 3)
        canvas.paste(im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0), ((w - nw) // 2, (h - nh) // 2))
        return np.asarray(canvas)

    rng = np.random.default_rng(3)
    for k in range(200):
        frame = random_frame(k, *(int(v) for v in rng.integers(1, 300, 2)))
        size = tuple(int(v) for v in rng.integers(8, 128, 2))
        whole = Box(0, 0, frame.width, frame.height)
        assert (crop_pixels(frame, whole, size, "pad") == letterbox(frame, size)).all()
        assert (np.asarray(resize_image(frame, size, "pad")) == letterbox(frame, size)).all()
        stretched = np.asarray(frame.resize(size[::-1], Image.Resampling.BILINEAR, reducing_gap=2.0))
        assert (crop_pixels(frame, whole, size, "stretch") == stretched).all()


def test_a_border_box_is_padded_with_trainings_grey_at_its_scale():
    """A box at the frame's left edge, pad mode: the widening that falls left of the frame is grey, as in the
    letterbox; the visible part is resized at the same scale as training's letterbox resizes it."""
    frame = random_frame(4, 200, 200)
    size, box = (64, 32), Box(0, 30, 40, 128)  # scale 0.5: 20 columns of box, 6 of margin on each side
    out = crop_pixels(frame, box, size, "pad")
    assert (out[:, :6] == PAD_VALUE).all()  # 12 frame pixels left of x=0: nothing there, grey
    visible = frame.crop((0, 30, 52, 158))  # the box and 12 pixels of context on its right
    letterboxed = np.asarray(resize_image(visible, size, "pad"))  # training: 26 columns, centred at 3
    assert (out[:, 6:] == letterboxed[:, 3:29]).all()
    stretch = crop_pixels(frame, Box(-10, 30, 40, 128), size, "stretch")  # a quarter of the box left of the frame
    assert (stretch[:, :8] == PAD_VALUE).all() and (stretch[:, 8:] != PAD_VALUE).any()
    assert (stretch[:, 8:] == np.asarray(resize_image(frame.crop((0, 30, 30, 158)), (64, 24), "stretch"))).all()


def test_without_context_a_pad_crop_is_the_letterbox_of_the_box():
    frame = random_frame(5, 200, 200)
    box = Box(70, 40, 30, 90)
    expected = np.asarray(resize_image(frame.crop((70, 40, 100, 130)), (64, 32), "pad"))
    assert (crop_pixels(frame, box, (64, 32), "pad", context=False) == expected).all()
    assert not (crop_pixels(frame, box, (64, 32), "pad") == expected).all()  # with context the margins show frame


def test_a_box_outside_the_image_is_refused_by_the_rule():
    with pytest.raises(ValueError, match="outside"):
        crop_resize(random_frame(6), Box(200, 10, 20, 20), (32, 16), "pad")


# ---------------------------------------------------------------- streaming and memory

def test_rows_stream_before_the_last_frame_is_read(figures_run):
    model = attrfit.load(figures_run)
    frames = draw_frames()

    class Recording(list):
        read: list[int] = []

        def __getitem__(self, i):
            self.read.append(i)
            return super().__getitem__(i)

    source = Recording(frames)
    job = plan_boxes(model, source, np.array([[float(v) for v in line.split(",")[:7]] for line in mot_lines()]),
                     BoxOptions(chunk=3))
    first = next(r for r in job.stream() if isinstance(r, BoxRow))
    assert first.row["frame"] == 1 and len(source.read) < N_FRAMES


# Runs the command; once its first row is out (model loaded, first batch run), the peak memory (VmHWM) is reset,
# so what is printed at the end is the peak while the boxes streamed. Linux only (/proc/self/clear_refs).
MEMORY = textwrap.dedent("""
    import sys
    from attrfit.cli.app import main
    from attrfit.serving import boxes

    def peak_kib():
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))

    real = boxes.BoxJob.stream

    def stream(self, *args, **kwargs):
        for i, item in enumerate(real(self, *args, **kwargs)):
            if i == 0:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            yield item

    boxes.BoxJob.stream = stream
    code = main(sys.argv[1:])
    print(code, peak_kib())
""")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_memory_stays_flat_over_ten_thousand_boxes(figures_run, tmp_path):
    """Peak memory while 1,000 and while 10,000 boxes of a video stream through the command. Held, the extra
    9,000 crops would take 13 MiB, 2,250 frames of 120 x 160 150 MiB, the rows as dicts about 10 MiB."""
    frames = draw_frames()
    video = write_video(tmp_path / "long.avi", [frames[k % N_FRAMES] for k in range(2500)], "mjpeg", "yuvj420p")
    peaks = {}
    for n_frames in (250, 2500):
        boxes = tmp_path / f"b{n_frames}.txt"
        boxes.write_text("".join(f"{f},{t + 4 * (f % 7)},{20 + 30 * t},30,24,48,1\n"
                                 for f in range(1, n_frames + 1) for t in range(4)))
        out = subprocess.run([sys.executable, "-c", MEMORY, "predict", str(figures_run), "--boxes", str(boxes),
                              "--frames", str(video), "--out", str(tmp_path / f"o{n_frames}.csv"), "--tracks",
                              str(tmp_path / f"t{n_frames}.csv"), "--quiet", "--device", "cpu"],
                             capture_output=True, text=True, timeout=300)
        code, peak_kib = out.stdout.split()[-2:]
        assert code == "0", out.stderr[-2000:]
        assert len(read_csv(tmp_path / f"o{n_frames}.csv")) == 4 * n_frames
        peaks[n_frames] = int(peak_kib) / 1024
    assert len(read_csv(tmp_path / "t2500.csv")) == 28  # 4 places x 7 ids: tracks end and are written as they go
    assert peaks[2500] - peaks[250] < 8, peaks  # MiB; measured: +3.3 (with every crop kept: +18.6)


# ---------------------------------------------------------------- bad input: one line naming file and line

@pytest.mark.parametrize("line,needle", [
    ("3,1,10,20,0,48,1", "gt.txt:4: the box is 0 x 48 pixels; a box needs a positive width and height"),
    ("3,1,10,20,24,-5,1", "gt.txt:4: the box is 24 x -5 pixels"),
    ("3,1,10,20", "gt.txt:4: expected at least 6 fields frame,id,x,y,w,h[,conf,...], got 4"),
    ("3,1,ten,20,24,48", "gt.txt:4: x is 'ten', not a number"),
    ("3.5,1,10,20,24,48", "gt.txt:4: frame 3.5 is not a whole number"),
    ("3,1,nan,20,24,48", "gt.txt:4: x is nan, not a finite number"),
    ("99,1,10,20,24,48", "gt.txt:4: frame 99 is not in"),
])
def test_a_bad_box_line_is_one_error_naming_file_and_line(figures_run, scene, tmp_path, capsys, line, needle):
    folder, _, _ = scene
    boxes = tmp_path / "gt.txt"
    boxes.write_text("\n".join([*mot_lines(1), line, *mot_lines(2)[3:]]) + "\n")
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", boxes, "--frames", folder,
                       "--out", tmp_path / "o.csv", "--tracks", tmp_path / "t.csv")
    assert_one_error(code, err, needle)
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "t.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["gt.txt"]  # no temp file left either


def test_a_box_list_on_no_frame_at_all_is_an_error(figures_run, scene, tmp_path, capsys):
    folder, _, _ = scene
    (tmp_path / "empty.txt").write_text("\n\n")
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", tmp_path / "empty.txt", "--frames", folder)
    assert_one_error(code, err, "empty.txt: no boxes in it, so no frame to predict on")


def test_a_video_that_cannot_be_decoded_is_an_error(figures_run, scene, tmp_path, capsys):
    pytest.importorskip("av", reason=NO_AV)
    _, boxes, _ = scene
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video" * 50)
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", boxes, "--frames", tmp_path / "broken.mp4")
    assert_one_error(code, err, "broken.mp4: cannot be decoded as a video")


def test_a_video_shorter_than_its_boxes_names_the_first_missing_frame(figures_run, scene, tmp_path, capsys):
    _, boxes, frames = scene
    video = write_video(tmp_path / "short.mkv", frames[:8], "ffv1", "bgr0")
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", boxes, "--frames", video, "--out", tmp_path / "o.csv")
    assert_one_error(code, err, "gt.txt:25: frame 9 is not in", "(8 frames, numbered from 1)")
    assert not (tmp_path / "o.csv").exists()


def test_a_csv_of_boxes_names_images_relative_to_its_folder(figures_run, scene, tmp_path, capsys):
    folder, _, frames = scene
    rows = ["image_path,x,y,w,h,track_id"] + [
        f"img1/{f:06d}.png,{','.join(map(str, track_box(tid, f)))},p{tid}" for f in range(1, 6) for tid in TRACKS]
    (folder.parent / "boxes.csv").write_text("\n".join(rows) + "\n")
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", folder.parent / "boxes.csv", "--tracks",
                       tmp_path / "t.csv", "--quiet")
    assert code == 0, err
    tracks = read_csv(tmp_path / "t.csv")
    assert [(t["track_id"], t["shirt"], t["first_frame"], t["last_frame"]) for t in tracks] == [
        (f"p{k}", v[0], "img1/000001.png", "img1/000005.png") for k, v in TRACKS.items()]
    (tmp_path / "bad.csv").write_text("image_path,x,y,w,h\nimg1/000001.png,1,2,3,4\nimg1/nope.png,1,2,3,4\n")
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", tmp_path / "bad.csv", "--frames", folder.parent)
    assert_one_error(code, err, "bad.csv:3: image img1/nope.png is not in")
    (tmp_path / "cols.csv").write_text("image_path,x,y,width,h\n")
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", tmp_path / "cols.csv")
    assert_one_error(code, err, "cols.csv:1: no w column(s)")


def test_confidence_weighting_needs_a_confidence(figures_run, scene, tmp_path, capsys):
    folder, _, _ = scene
    (tmp_path / "gt.txt").write_text("\n".join(mot_lines(2, extra="-1,-1,-1,-1")) + "\n")
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", tmp_path / "gt.txt", "--frames", folder,
                       "--track-weight", "confidence")
    assert_one_error(code, err, "gt.txt:1: conf is -1.0", "--track-weight area")


def test_outputs_are_checked_before_any_frame_is_read(figures_run, scene, tmp_path, capsys):
    folder, boxes, _ = scene
    (tmp_path / "o.csv").write_text("keep me")
    argv = ["predict", figures_run, "--boxes", boxes, "--frames", folder]
    code, _, err = cli(capsys, *argv, "--out", tmp_path / "o.csv")
    assert_one_error(code, err, "--out", "already exists")
    code, _, err = cli(capsys, *argv, "--tracks", boxes, "--force")
    assert_one_error(code, err, "--tracks", "is an input")
    code, _, err = cli(capsys, *argv, "--out", folder / "000001.png", "--force")
    assert_one_error(code, err, "is an input")
    code, _, err = cli(capsys, *argv, "--out", tmp_path / "same.csv", "--tracks", tmp_path / "same.csv")
    assert_one_error(code, err, "--out and --tracks name the same file")
    assert (tmp_path / "o.csv").read_text() == "keep me" and not (tmp_path / "same.csv").exists()


def test_box_flags_and_image_inputs_do_not_mix(figures_run, scene, capsys):
    folder, boxes, _ = scene
    code, _, err = cli(capsys, "predict", figures_run, str(folder / "000001.png"), "--boxes", boxes, "--frames", folder)
    assert_one_error(code, err, "either INPUT images or --boxes")
    code, _, err = cli(capsys, "predict", figures_run, str(folder / "000001.png"), "--frames", folder)
    assert_one_error(code, err, "--frames only apply with --boxes")
    code, _, err = cli(capsys, "predict", figures_run)
    assert_one_error(code, err, "give images to predict")
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", boxes)
    assert_one_error(code, err, "give the frames")


def test_an_unreadable_frame_fails_only_its_boxes(figures_run, scene, tmp_path, capsys):
    folder, boxes, _ = scene
    copy = tmp_path / "img1"
    copy.mkdir()
    for p in folder.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    (copy / "000004.png").write_bytes(b"not a png")
    rows, tracks, err = predicted(figures_run, copy, boxes, capsys=capsys, tmp=tmp_path)
    bad = [r for r in rows if r["frame"] == "4"]
    assert len(bad) == 3 and all(r["error"].startswith("the frame cannot be read") for r in bad)
    assert [t["predicted"] for t in tracks] == ["11", "11", "9"]
    assert {int(t["track_id"]): t["shirt"] for t in tracks} == {k: v[0] for k, v in TRACKS.items()}


def test_in_memory_boxes_are_checked_like_a_file(figures_run):
    model = attrfit.load(figures_run)
    with pytest.raises(AttrfitError, match=r"boxes:2: the box is 24 x 0 pixels"):
        model.predict_boxes(draw_frames(2), [[1, 1, 0, 0, 24, 48], [2, 1, 0, 0, 24, 0]])
    with pytest.raises(AttrfitError, match="N x 6"):
        model.predict_boxes(draw_frames(2), [[1, 1, 0, 0]])
    with pytest.raises(AttrfitError, match="weight 'size' is not one of area, confidence, equal"):
        model.predict_boxes(draw_frames(2), [[1, 1, 0, 0, 24, 48]], weight="size")
    with pytest.raises(AttrfitError, match="context must be True or False"):
        model.predict_boxes(draw_frames(2), [[1, 1, 0, 0, 24, 48]], context="no")


def test_a_frame_before_the_first_of_a_video_is_refused_before_decoding(figures_run, scene, tmp_path, capsys):
    _, _, frames = scene
    video = write_video(tmp_path / "v.mkv", frames[:2], "ffv1", "bgr0")
    (tmp_path / "zero.txt").write_text("1,1,0,0,24,48\n0,1,0,0,24,48\n")  # a tracker counting frames from 0
    code, _, err = cli(capsys, "predict", figures_run, "--boxes", tmp_path / "zero.txt", "--frames", video)
    assert_one_error(code, err, "zero.txt:2: frame 0 is not in", "its frames are numbered from 1")
