"""Mutation testing: put one realistic bug at a time into src/ and check that the tests notice.

    .venv/bin/python bench/mutations.py                        # every mutation in bench/mutations.toml
    .venv/bin/python bench/mutations.py --only best-is-last    # some of them, by name
    make mutate

Each entry of the list file names a file, a snippet of it that must occur exactly once, the
snippet to put in its place, and the tests that should fail (files or pytest node ids). The
harness first runs all those tests on the unmutated source (they must pass, or every mutation
would look caught), then per mutation: writes the mutated file, runs ``pytest -x`` on its
tests under a timeout, and puts the original bytes back, always: on success, failure, error,
Ctrl-C or SIGTERM. A backup in the temp folder lets the next start repair what a SIGKILL left.

Prints one line per mutation (caught / MISSED / ERROR) and the score; exits 0 only when every
mutation was caught. Not part of the test suite (tests/bench/test_pinned_mutations.py checks that
the list still applies to the source and that this harness restores files).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LIST = ROOT / "bench" / "mutations.toml"


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    mutated: str
    tests: tuple[str, ...]  # test files or node ids that must fail
    why: str = ""  # the real bug this stands for


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # caught | MISSED | ERROR
    seconds: float
    detail: str = ""


def load_mutations(path: Path = DEFAULT_LIST) -> list[Mutation]:
    import tomllib  # Python 3.11+; the package itself still runs on 3.10

    with open(path, "rb") as f:
        entries = tomllib.load(f)["mutation"]
    return [Mutation(e["name"], e["file"], e["original"], e["mutated"], tuple(e["tests"]), e.get("why", ""))
            for e in entries]


def problems(mutations: list[Mutation], root: Path = ROOT) -> list[str]:
    """Why a list entry can no longer be applied (a snippet moved or changed, a test file gone); empty when fine."""
    out, names = [], set()
    for m in mutations:
        if m.name in names:
            out.append(f"{m.name}: the name is used twice")
        names.add(m.name)
        path = root / m.file
        if not path.is_file():
            out.append(f"{m.name}: {m.file} does not exist")
            continue
        count = path.read_text(encoding="utf-8").count(m.original)
        if count != 1:
            out.append(f"{m.name}: the original snippet occurs {count} times in {m.file} (must be once)")
        if m.mutated == m.original:
            out.append(f"{m.name}: the mutated snippet equals the original")
        if not m.tests:
            out.append(f"{m.name}: no tests named")
        for t in m.tests:
            if not (root / t.split("::")[0]).is_file():
                out.append(f"{m.name}: test file {t.split('::')[0]} does not exist")
    return out


# ---------------------------------------------------------------- applying a mutation, always undone

def backup_file(root: Path) -> Path:
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"attrfit-mutation-backup-{tag}.json"


def recover(root: Path) -> list[str]:
    """Put back any file a killed run left mutated; returns the files restored."""
    backup = backup_file(root)
    if not backup.is_file():
        return []
    saved = json.loads(backup.read_text(encoding="utf-8"))
    (root / saved["file"]).write_bytes(bytes.fromhex(saved["bytes"]))
    backup.unlink()
    return [saved["file"]]


@contextlib.contextmanager
def applied(m: Mutation, root: Path = ROOT) -> Iterator[None]:
    """The file with the mutation in place inside the block; its original bytes back afterwards, whatever happens."""
    path = root / m.file
    original = path.read_bytes()
    text = original.decode("utf-8")
    if text.count(m.original) != 1:
        raise ValueError(f"{m.name}: the original snippet occurs {text.count(m.original)} times in {m.file}")
    backup = backup_file(root)
    backup.write_text(json.dumps({"file": m.file, "bytes": original.hex()}), encoding="utf-8")
    try:
        path.write_bytes(text.replace(m.original, m.mutated).encode("utf-8"))
        yield
    finally:
        path.write_bytes(original)
        backup.unlink(missing_ok=True)


# ---------------------------------------------------------------- running the tests

def run_tests(tests: tuple[str, ...], root: Path, timeout: float, python: str) -> tuple[int | None, str]:
    """(pytest's exit code or None on timeout, its output) for ``pytest -x`` on ``tests``, with root/src first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no stale .pyc of a mutated module
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return None, e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    return r.returncode, r.stdout + r.stderr


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0]
    return ""


def try_mutation(m: Mutation, root: Path, timeout: float, python: str) -> Outcome:
    start = time.perf_counter()
    with applied(m, root):
        code, output = run_tests(m.tests, root, timeout, python)
    seconds = time.perf_counter() - start
    if code is None:
        return Outcome(m, "caught", seconds, f"timeout after {timeout:.0f} s")
    if code == 0:
        return Outcome(m, "MISSED", seconds, "every test passed")
    if code in (1, 2):  # 1: a test failed; 2: collection failed (e.g. an import error)
        return Outcome(m, "caught", seconds, first_failure(output))
    return Outcome(m, "ERROR", seconds, f"pytest exit code {code}: {output.strip().splitlines()[-1:]}")


def baseline(mutations: list[Mutation], root: Path, timeout: float, python: str) -> str:
    """'' when every named test passes on the unmutated source, else pytest's output."""
    tests = tuple(dict.fromkeys(t for m in mutations for t in m.tests))
    code, output = run_tests(tests, root, timeout, python)
    return "" if code == 0 else output or f"timeout after {timeout:.0f} s"


# ---------------------------------------------------------------- command line

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", type=Path, default=DEFAULT_LIST, help="the mutation list (TOML)")
    p.add_argument("--root", type=Path, default=ROOT, help="the repository the list's paths are relative to")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    p.add_argument("--timeout", type=float, default=300, help="seconds per pytest run (default 300)")
    p.add_argument("--no-baseline", action="store_true", help="skip the check that the tests pass unmutated")
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs pytest")
    return p.parse_args(argv)


def select(mutations: list[Mutation], only: list[str] | None) -> list[Mutation]:
    if not only:
        return mutations
    unknown = sorted(set(only) - {m.name for m in mutations})
    if unknown:
        raise SystemExit(f"mutations: unknown name(s) {', '.join(unknown)}")
    return [m for m in mutations if m.name in only]


def _interrupt(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so the file being mutated is restored."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.root.resolve()
    for f in recover(root):
        print(f"mutations: restored {f}, left mutated by an earlier run that was killed", flush=True)
    mutations = select(load_mutations(args.list), args.only)
    bad = problems(mutations, root)
    if bad:
        print("mutations: the list does not apply to the source:\n  " + "\n  ".join(bad))
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    if not args.no_baseline:
        print("mutations: checking that the named tests pass unmutated ...", flush=True)
        failed = baseline(mutations, root, args.timeout * 2, args.python)
        if failed:
            print(failed[-3000:] + "\nmutations: the tests fail without any mutation; fix that first")
            return 2
    outcomes = []
    for m in mutations:
        o = try_mutation(m, root, args.timeout, args.python)
        outcomes.append(o)
        print(f"{o.status:<7} {m.name:<34} {o.seconds:6.1f} s  {m.file}  {o.detail}", flush=True)
    caught = sum(o.status == "caught" for o in outcomes)
    print(f"mutation score: {caught}/{len(outcomes)} caught")
    missed = [o.mutation.name for o in outcomes if o.status != "caught"]
    if missed:
        print("not caught: " + ", ".join(missed))
    return 0 if not missed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nmutations: interrupted; the mutated file was restored", file=sys.stderr)
        sys.exit(130)
