import json
import subprocess
import sys


from attrfit.cli.app import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help():
    r = subprocess.run([sys.executable, "-m", "attrfit", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("attrfit ")
    r = subprocess.run([sys.executable, "-m", "attrfit", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--lr" in r.stdout and "--resume" in r.stdout and "--cutout" in r.stdout


def test_user_error_is_one_line_exit_2(capsys, tmp_path):
    code, out, err = run(capsys, "split", tmp_path / "nope.csv")
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("attrfit: error:") and "Traceback" not in err


def test_split_command_then_refuses_overwrite(capsys, tiny, tmp_path):
    out_file = tmp_path / "s.json"
    code, out, err = run(capsys, "split", tiny, "--out", out_file, "--split-seed", 2)
    assert code == 0 and out_file.is_file() and "train" in out
    assert json.loads(out_file.read_text())["seed"] == 2
    code, out, err = run(capsys, "split", tiny, "--out", out_file)
    assert code == 2 and "already exists" in err
    code, out, err = run(capsys, "split", tiny, "--out", out_file, "--force")
    assert code == 0


def test_prepare_summarises(capsys, tiny):
    code, out, err = run(capsys, "prepare", tiny, "--size", "16x16")
    assert code == 0 and "images (60, 3, 16, 16)" in out and "majority" in out


def test_train_rejects_unknown_option_value(capsys, tiny):
    code, out, err = run(capsys, "train", tiny, "--epochs", "many")
    assert code == 2 and "epochs" in err


def test_train_and_evaluate_json(capsys, tiny, tmp_path):
    code, out, err = run(capsys, "train", tiny, "--size", "16x16", "--width", 8, "--stages", 2, "--epochs", 1,
                         "--batch-size", 16, "--run-dir", tmp_path / "r", "--quiet", "--no-report")
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", tmp_path / "r", "--json")
    assert code == 0
    d = json.loads(out)  # stdout is JSON only
    assert set(d) >= {"heads", "mean"} and set(d["heads"]["color"]) >= {"accuracy", "balanced_accuracy",
                                                                         "majority_accuracy", "n"}
    code, out, err = run(capsys, "train", "--resume", tmp_path / "r", "--epochs", 3)
    assert code == 2 and "give nothing else" in err
