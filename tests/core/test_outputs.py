"""The one output policy (core/outputs.py): no output replaces an input or a run's file, nor without --force any file."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_error, cli


from attrfit.core import runs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--size", "16x16", "--width", "8", "--stages", "2", "--batch-size", "16", "--lr", "0.05", "--seed", "1",
        "--precision", "fp32", "--no-report", "--quiet"]
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


def test_predict_never_replaces_its_input_csv(capsys, run, tiny):
    before = tiny.read_bytes()
    for force in ([], ["--force"]):
        code, _, err = cli(capsys, "predict", run, tiny, "--out", tiny, *force, "--quiet")
        assert_one_error(code, err, "is an input", "never replaced")
    assert tiny.read_bytes() == before


def test_split_never_replaces_its_input_csv(capsys, tiny):
    before = tiny.read_bytes()
    code, _, err = cli(capsys, "split", tiny, "--out", tiny, "--force")
    assert_one_error(code, err, "is an input", "never replaced")
    assert tiny.read_bytes() == before


@pytest.mark.parametrize("name", ["best.pt", "last.pt", "config.json", "metrics.csv"])
def test_export_and_predict_never_replace_a_run_file(capsys, run, tiny, name):
    before = (run / name).read_bytes()
    code, _, err = cli(capsys, "export", run, "--out", run / name, "--format", "torchscript", "--force")
    assert_one_error(code, err, "never replaced")
    code, _, err = cli(capsys, "predict", run, tiny.parent / "img" / "1.png", "--out", run / name, "--force")
    assert_one_error(code, err, "never replaced")
    assert (run / name).read_bytes() == before


def test_existing_outputs_are_replaced_only_with_force(capsys, run, tiny, tmp_path):
    for out, argv in ((tmp_path / "p.csv", ["predict", run, tiny.parent / "img" / "1.png", "--quiet"]),
                      (tmp_path / "m.pt", ["export", run])):
        out.write_text("mine")
        code, _, err = cli(capsys, *argv, "--out", out)
        assert_one_error(code, err, "already exists", "--force")
        assert out.read_text() == "mine"
        assert cli(capsys, *argv, "--out", out, "--force")[0] == 0
        assert out.read_bytes() != b"mine"
    (tmp_path / "n.pt.schema.json").write_text("mine")  # the schema beside an export is protected too
    code, _, err = cli(capsys, "export", run, "--out", tmp_path / "n.pt")
    assert_one_error(code, err, "n.pt.schema.json already exists")
    assert not (tmp_path / "n.pt").exists()


def test_outputs_with_spaces_and_unicode_in_new_folders(capsys, run, tiny, tmp_path):
    folder = tmp_path / "my exports" / "ünï cödé"
    assert cli(capsys, "export", run, "--out", folder / "módel v1.onnx")[0] == 0
    assert (folder / "módel v1.onnx.schema.json").is_file()
    assert cli(capsys, "predict", run, tiny.parent / "img" / "1.png", "--out", folder / "préd s.json", "--quiet")[0] == 0
    assert json.loads((folder / "préd s.json").read_text())[0]["image_path"].endswith("1.png")


# Every option of every command that names something to write: (command, option). A new output option
# must be added here, and so gets the checks below.
FILE_OUTPUTS = {("split", "--out"), ("report", "--out"), ("compare", "--html"), ("predict", "--out"),
                ("predict", "--tracks"), ("export", "--out"), ("audit-labels", "--out"), ("audit-labels", "--html")}
FOLDER_OUTPUTS = {("lr-find", "--out"), ("demo-data", "out_dir"), ("demo", "--out"), ("train", "--run-dir"),
                  ("dataset", "--out")}
# Options that take a value and say "write" in their help, but are not where the command writes.
NOT_OUTPUTS = {("train", "--checkpoint-every"), ("demo", "--checkpoint-every"), ("dataset", "--partition")}


def _path_options() -> set[tuple[str, str]]:
    """(command, option) for every option that may name where a command writes: by its name (out, html, ..._dir)
    or by its help sentence ("file to write", "folder for ...")."""
    from attrfit.cli.app import build_parser

    found = set()
    for name, p in build_parser().commands.items():
        for a in p._actions:
            label = a.option_strings[0] if a.option_strings else a.dest
            by_name = re.search(r"(^|_)(out|html|dir)$", a.dest or "") and not a.dest.endswith("cache_dir")
            by_help = a.nargs != 0 and re.search(r"\bwrite|\bfolder for\b", a.help or "", re.I)
            if by_name or by_help:
                found.add((name, label))
    return found - NOT_OUTPUTS


def test_every_output_option_is_under_the_policy():
    assert _path_options() == FILE_OUTPUTS | FOLDER_OUTPUTS, "an output option the policy tests do not cover"


@pytest.fixture
def second_run(tmp_path, trained_tiny) -> Path:
    return Path(shutil.copytree(trained_tiny[0], tmp_path / "other_run"))


def _argv(command: str, run: Path, csv: Path, option: str) -> list:
    """A command line of ``command`` that would write its output, reading ``run`` (and its CSV)."""
    image = csv.parent / "img" / "1.png"
    if option == "--tracks":  # the run's first image as frame 1 of a video, one box on it
        frames = csv.parent.parent / "frames"
        frames.mkdir(exist_ok=True)
        shutil.copy(image, frames / "000001.png")
        (csv.parent.parent / "boxes.txt").write_text("1,1,0,0,8,8,1,-1,-1,-1\n")
        return ["predict", run, "--boxes", csv.parent.parent / "boxes.txt", "--frames", frames, "--quiet"]
    return {"split": ["split", csv], "report": ["report", run, "--quiet"], "compare": ["compare", run, run / "last.pt"],
            "predict": ["predict", run, image, "--quiet"], "export": ["export", run, "--format", "torchscript"],
            "audit-labels": ["audit-labels", csv, "--size", "16x16", "--quiet"]}[command]


@pytest.mark.parametrize("command, option", sorted(FILE_OUTPUTS))
def test_no_output_replaces_an_input_a_run_file_or_without_force_any_file(capsys, run, second_run, tmp_path,
                                                                        monkeypatch, command, option):
    from attrfit.core.runs import read_json

    monkeypatch.chdir(tmp_path)  # default outputs (audit-labels' CSV) land here if a refusal ever fails

    csv = Path(read_json(run / "config.json")["data"]["csv"])
    if command in ("split", "audit-labels"):
        csv = Path(shutil.copytree(csv.parent, tmp_path / "data")) / csv.name  # a private table to split
        cli(capsys, "split", csv)
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    split_file = csv.with_suffix(".split.json")  # what 'split --force' replaces; an input of the others
    inputs = [csv, csv.parent / "img" / "1.png"] + ([split_file] if command != "split" else [])
    for target, force, needle in ([(p, ["--force"], "is an input") for p in inputs]
                                  + [(second_run / "best.pt", ["--force"], "is a file of the run"),
                                     (second_run / "lr_find" / "lr_find.json", ["--force"], "is a file of the run"),
                                     (mine, [], "already exists")]):
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            target.write_text("{}")
        before = target.read_bytes()
        code, _, err = cli(capsys, *_argv(command, run, csv, option), option, target, *force)
        assert_one_error(code, err, needle)
        assert target.read_bytes() == before, (command, option, target)


@pytest.mark.parametrize("command, option", sorted(FOLDER_OUTPUTS))
def test_no_command_writes_into_a_run_folder(capsys, run, command, option):
    csv = Path(runs.read_json(run / "config.json")["data"]["csv"])
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    argv = {"lr-find": ["lr-find", csv, "--size", "16x16", "--force", "--quiet"], "demo-data": ["demo-data", "--force"],
            "demo": ["demo", "--quiet"], "train": ["train", csv, "--quiet"],
            "dataset": ["dataset", "market1501", csv, "--force"]}[command]
    for target in (run, run / "lr_find"):
        argv_out = [*argv, target] if option == "out_dir" else [*argv, option, target]
        code, _, err = cli(capsys, *argv_out)
        assert_one_error(code, err, "run")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_report_never_empties_a_folder_of_pictures_it_did_not_make(capsys, run, tmp_path):
    pictures = tmp_path / "holiday_files"
    pictures.mkdir()
    (pictures / "beach.png").write_bytes(b"\x89PNG mine")
    code, _, err = cli(capsys, "report", run, "--out", tmp_path / "holiday.html", "--quiet")
    assert_one_error(code, err, "holds files a report did not write")
    assert (pictures / "beach.png").read_bytes() == b"\x89PNG mine"
    assert cli(capsys, "report", run, "--out", tmp_path / "r.html", "--quiet")[0] == 0
    assert cli(capsys, "report", run, "--out", tmp_path / "r.html", "--quiet", "--force")[0] == 0  # its own figures


def test_report_without_out_remakes_its_own_page(capsys, run):
    assert cli(capsys, "report", run, "--quiet")[0] == 0
    assert cli(capsys, "report", run, "--quiet")[0] == 0  # RUN/report.html is the report's own, no --force needed
