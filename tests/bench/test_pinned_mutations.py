"""The mutation list still applies to the source, and the harness always puts files back.

The mutation run itself (``make mutate``) is not part of the suite: it takes minutes.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_mutations", ROOT / "bench" / "mutations.py")
harness = sys.modules["bench_mutations"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

CRITICAL = {"split.py", "metrics.py", "loop.py", "scoring.py", "predict.py"}
pytest.importorskip("tomllib", reason="the mutation list is TOML, read with Python 3.11's tomllib")


def test_every_mutation_still_applies_to_the_source():
    mutations = harness.load_mutations()
    assert harness.problems(mutations) == []  # each original snippet occurs exactly once, each test file exists
    assert len(mutations) >= 30
    assert CRITICAL <= {Path(m.file).name for m in mutations}
    assert all(m.why for m in mutations)


def toy_project(root: Path) -> Path:
    """A package with one function, a test of it, and a list of two mutations: one the test catches, one it cannot."""
    (root / "src").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "src" / "toy.py").write_text("def add(a, b):\n    return a + b\n")
    (root / "tests" / "test_toy.py").write_text("from toy import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    (root / "m.toml").write_text(
        '[[mutation]]\nname = "minus"\nfile = "src/toy.py"\noriginal = "a + b"\nmutated = "a - b"\n'
        'tests = ["tests/test_toy.py"]\nwhy = "wrong operator"\n\n'
        '[[mutation]]\nname = "swapped"\nfile = "src/toy.py"\noriginal = "a + b"\nmutated = "b + a"\n'
        'tests = ["tests/test_toy.py::test_add"]\nwhy = "an equivalent mutant: nothing can catch it"\n')
    return root / "src" / "toy.py"


def test_the_harness_reports_caught_and_missed_and_restores_the_file(tmp_path):
    source = toy_project(tmp_path)
    before = source.read_bytes()
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "mutations.py"), "--root", str(tmp_path),
                        "--list", str(tmp_path / "m.toml"), "--timeout", "60", "--no-baseline"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr  # not every mutation caught
    lines = r.stdout.splitlines()
    assert any(line.startswith("caught") and " minus " in line for line in lines), r.stdout
    assert any(line.startswith("MISSED") and " swapped " in line for line in lines), r.stdout
    assert "mutation score: 1/2 caught" in r.stdout
    assert source.read_bytes() == before
    assert not harness.backup_file(tmp_path).exists()


def test_the_file_is_restored_on_ctrl_c_and_after_a_kill(tmp_path):
    source = toy_project(tmp_path)
    before = source.read_bytes()
    minus = harness.load_mutations(tmp_path / "m.toml")[0]
    with pytest.raises(KeyboardInterrupt):
        with harness.applied(minus, tmp_path):
            assert "a - b" in source.read_text()
            raise KeyboardInterrupt
    assert source.read_bytes() == before and not harness.backup_file(tmp_path).exists()
    # a SIGKILL skips every finally: the backup left behind restores the file on the next start
    applying = harness.applied(minus, tmp_path)
    applying.__enter__()  # never exited, as if killed
    assert source.read_bytes() != before
    assert harness.recover(tmp_path) == ["src/toy.py"]
    assert source.read_bytes() == before and not harness.backup_file(tmp_path).exists()
