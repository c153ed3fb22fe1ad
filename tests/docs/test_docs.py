"""The documents agree with the code: commands parse, links resolve, tables and figures match.

What is checked, and the convention for commands written in documents, is described in
docs/testing.md ("Documentation that cannot drift"). Imports come from attrfit only, so the
file runs under any pytest import mode.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from attrfit.cli.app import build_parser
from attrfit.core.errors import AttrfitError
from attrfit.core.options import flag_of
from attrfit.recipe.config import TrainConfig, leaf_fields

ROOT = Path(__file__).resolve().parents[2]
MANUAL = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
DOCUMENTS = [*MANUAL, ROOT / "BENCHMARKS.md", ROOT / "CHANGELOG.md"]

# Placeholder words in documented commands, and the example value each stands for when parsed.
PLACEHOLDERS = {
    "RUN": "runs/example", "A": "runs/a", "B": "runs/b", "CSV": "labels.csv", "DIR": "folder",
    "FILE": "file.txt", "N": "1", "K": "4", "X": "0.2", "LR": "0.1", "LOWER": "0.01", "TAU": "1.0",
    "NAME": "peta", "SRC": "PETA.mat", "COMMAND": "train", "DURATION": "15m", "HxW": "128x64",
    "S": "labels.split.json", "S35": "peta35.split.json", "SH": "peta_heads.split.json", "C": "cache",
    "R35": "runs/peta35", "RH": "runs/peta_heads", "INPUT": "images/", "BOXES": "boxes.txt",
}
PLACEHOLDER = re.compile(r"\$?\{?([A-Z][A-Z0-9_]*|HxW)\}?")


@dataclass(frozen=True)
class Command:
    """One command line of a document: where it is, and its words after 'attrfit'."""

    where: str
    text: str


# ---------------------------------------------------------------- reading documents

def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of each fenced code block."""
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and lang is None:
            lang, lines = fence.group(1), []
        elif fence:
            blocks.append((lang, lines))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^\s*```.*?^\s*```[^\n]*$", "", text, flags=re.S | re.M)


def logical_lines(lines: list[str]) -> list[str]:
    """Lines with their backslash continuations joined."""
    out, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            out.append(pending + line)
            pending = ""
    return out + ([pending] if pending else [])


def shell_variables(lines: list[str]) -> dict[str, str]:
    """``NAME="value"`` lines of a block: the variables its later commands use."""
    found = {}
    for line in lines:
        m = re.match(r'^([A-Z][A-Z0-9_]*)="([^"]*)"\s*$', line.strip())
        if m:
            found[m.group(1)] = m.group(2)
    return found


def attrfit_words(line: str) -> list[str] | None:
    """The words after 'attrfit' when ``line`` runs attrfit (directly, or ``... -m attrfit``), else None."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None if "attrfit " not in line else [line]  # an unbalanced quote in a command fails its parse
    while words and re.match(r"^[A-Z_]+=", words[0]):
        words = words[1:]
    if words and (words[0] == "attrfit" or words[0].endswith("/attrfit")):
        return words[1:]
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "attrfit":
            return words[i + 2:]
    return None


def commands_in(path: Path) -> list[Command]:
    """Every attrfit command line of a document: in code blocks (not ``text`` ones) and in inline code."""
    text = path.read_text(encoding="utf-8")
    name = str(path.relative_to(ROOT))
    found = []
    for lang, lines in fenced_blocks(text):
        if lang == "text":
            continue
        variables = shell_variables(lines)
        for line in logical_lines(lines):
            for var, value in variables.items():
                line = re.sub(rf"\$\{{?{var}\}}?(?!\w)", value, line)
            if attrfit_words(line) is not None:
                found.append(Command(name, line.strip()))
    for span in re.findall(r"`([^`]+)`", prose(text).replace("\n", " ")):
        if re.match(r"^(\.venv/bin/)?attrfit ", span):
            found.append(Command(name, span))
    return found


# ---------------------------------------------------------------- parsing a documented command

def example_words(command: Command) -> list[str]:
    """The command's words with optional parts and '...' dropped and each placeholder replaced."""
    text = re.sub(r"\[[^\]]*\]", " ", command.text)  # [optional parts]
    words = attrfit_words(text) or []
    out = []
    for word in words:
        word = word.removesuffix("...")
        if not word:
            continue
        m = PLACEHOLDER.fullmatch(word)
        if m:
            assert m.group(1) in PLACEHOLDERS, (
                f"{command.where}: '{command.text}' uses the placeholder {word}: add it to PLACEHOLDERS "
                "in tests/docs/test_docs.py (see docs/testing.md)")
            word = PLACEHOLDERS[m.group(1)]
        out.append(word)
    return out


@functools.lru_cache(maxsize=1)
def parser() -> argparse.ArgumentParser:
    return build_parser()


def parse(words: list[str]) -> None:
    """Parse as ``attrfit`` would; --help and --version exit 0 and count as parsed."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            parser().parse_args(words)
        except SystemExit as e:
            if e.code not in (0, None):
                raise


ALL_COMMANDS = [c for path in DOCUMENTS for c in commands_in(path)]
COMMAND_NAMES = set(build_parser().commands)


def test_documents_show_commands():
    """The extraction finds the commands (a broken extractor would make the next test pass vacuously)."""
    where = {c.where for c in ALL_COMMANDS}
    assert {"README.md", "docs/training.md", "docs/results.md", "docs/data.md"} <= where
    assert len(ALL_COMMANDS) > 60


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: f"{c.where}:{c.text[:60]}")
def test_every_documented_command_parses(command):
    words = example_words(command)
    if len(words) == 1 and words[0] in COMMAND_NAMES:  # `attrfit NAME` names a command in prose
        return
    try:
        parse(words)
    except AttrfitError as e:
        pytest.fail(f"{command.where}: '{command.text}' does not parse with the current CLI: {e}")


def test_a_renamed_flag_fails_the_parse():
    """The check has teeth: a flag the CLI does not have is refused by the same parse."""
    with pytest.raises(AttrfitError, match="--budgett"):
        parse(example_words(Command("test", "attrfit train CSV --budgett 15m")))


# ---------------------------------------------------------------- links

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def links(path: Path) -> list[str]:
    text = re.sub(r"`[^`]*`", "", prose(path.read_text(encoding="utf-8")))
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    broken = []
    for link in links(path):
        if re.match(r"^[a-z]+:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{link}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{link}: no heading '#{anchor}' in {file.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


# ---------------------------------------------------------------- the README's tables

def section(path: Path, title: str) -> str:
    text = path.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert m, f"{path.name} has no section '## {title}'"
    return m.group(1)


def table_rows(text: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    return rows[2:]  # after the header and its rule


def default_of_key(key: str):
    cfg = TrainConfig()
    section_name, _, name = key.rpartition(".")
    owner = getattr(cfg, section_name) if section_name else cfg
    if section_name == "model":
        owner = owner.resolved()  # the preset's values, as a run gets them
    return getattr(owner, name)


def same_default(written: str, value) -> bool:
    written = written.strip("`")
    if isinstance(value, bool):
        return written == ("on" if value else "off")
    if isinstance(value, (int, float)):
        return float(written) == float(value)
    return written == str(value)


def test_readme_recipe_table_equals_the_config():
    keys = {flag_of(f): key for key, (_, f) in leaf_fields().items() if flag_of(f)}
    rows = table_rows(section(ROOT / "README.md", "The default recipe"))
    assert len(rows) >= 10
    wrong = []
    for option, default, why in rows:
        flags = re.findall(r"`--([a-z-]+)`", option)
        assert flags and why, f"README recipe row {option!r}: a flag and a reason"
        # one default for all the row's flags, or one each: "on, `4`"
        defaults = [d.strip() for d in default.split(",")]
        defaults = defaults if len(defaults) == len(flags) else [default] * len(flags)
        for flag, default in zip(flags, defaults):
            key = keys.get(flag.replace("-", "_"))
            assert key, f"README recipe table: --{flag} is not an option of the config"
            if not same_default(default, default_of_key(key)):
                wrong.append(f"--{flag}: README says {default}, recipe/config.py has {default_of_key(key)!r}")
    assert not wrong, "; ".join(wrong)


def test_readme_lists_every_command_once():
    listed = re.findall(r"^\| \[`([a-z-]+)`\]", section(ROOT / "README.md", "Commands"), flags=re.M)
    assert sorted(listed) == sorted(COMMAND_NAMES)


# ---------------------------------------------------------------- help sentences

def options_of_every_command():
    parser = build_parser()
    for name, p in [("attrfit", parser), *parser.commands.items()]:
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if action.help == argparse.SUPPRESS:  # lr-find's refused training-only flags: hidden on purpose
                continue
            yield name, action


def test_every_flag_has_a_help_sentence_and_a_placeholder():
    missing = []
    for name, action in options_of_every_command():
        label = f"{name} {'/'.join(action.option_strings) or action.dest}"
        if not isinstance(action.help, str) or len(action.help.split()) < 3:
            missing.append(f"{label}: no help sentence")
        takes_value = action.option_strings and action.nargs != 0 and not isinstance(
            action, (argparse._StoreTrueAction, argparse._VersionAction, argparse.BooleanOptionalAction))
        if takes_value and action.metavar is None and action.choices is None:
            missing.append(f"{label}: no named placeholder (metavar)")
    assert not missing, "; ".join(missing)


# ---------------------------------------------------------------- figures the code holds

def constant(name: str, *modules: str):
    """``name`` from the first of ``modules`` that defines it."""
    for module in modules:
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(found, name):
            return getattr(found, name)
    raise AssertionError(f"{name} is in none of {modules}: update tests/docs/test_docs.py")


def mutation_count() -> int:
    text = (ROOT / "bench" / "mutations.toml").read_text(encoding="utf-8")
    return len(re.findall(r"^\[\[mutation\]\]\s*$", text, flags=re.M))


def gpu_loss_reads() -> int:
    import torch

    sync_every = constant("host_sync_every", "attrfit.training.trainer")
    return sync_every(torch.device("cuda"), False)[0]


def cli_default(command: str, flag: str):
    parser = build_parser().commands[command]
    return next(a.default for a in parser._actions if flag in a.option_strings)


def held(name: str, *modules: str, scale: float = 1):
    """What the code holds: ``name`` from the first of ``modules`` that defines it, times ``scale``."""
    return lambda: scale * constant(name, *modules)


BUDGET, TRACKING = "attrfit.training.budget", "attrfit.training.tracking"
SIDES = "attrfit.training.sides"  # where the train and val images live during a run
FINDINGS = "attrfit.evaluation.findings"  # the report's warnings
LABELS = "attrfit.data.labels"  # which columns can be heads
MISTAKES = "attrfit.evaluation.mistakes"

# (document, a pattern whose one group is the figure, what the code holds)
FIGURES = [
    ("docs/testing.md", r"The list holds (\d+) bugs", mutation_count),
    ("docs/training.md", r"with a margin of ([\d.]+)", held("MARGIN", BUDGET)),
    ("docs/training.md", r"the first steps \((\d+) after one", held("TIMED_STEPS", BUDGET)),
    ("docs/training.md", r"plan off by ([\d.]+)x or more", held("REPLAN_OFF_BY", BUDGET)),
    ("docs/training.md", r"plus (\d+) s for the report", held("REPORT_S", BUDGET)),
    ("docs/training.md", r"for the report and ([\d.]+) s per head", held("REPORT_PER_HEAD_S", BUDGET)),
    ("docs/training.md", r"median\s+of the last (\d+)", held("PACE_EPOCHS", BUDGET)),
    ("docs/training.md", r"in the first (\d+)% of its schedule", held("LENGTHEN_UNTIL", BUDGET, scale=100)),
    ("docs/training.md", r"when that adds (\d+)% of them", held("LENGTHEN_AT_LEAST", BUDGET, scale=100)),
    ("docs/training.md", r"with a (\d+) s timeout", held("PROBE_TIMEOUT_S", TRACKING)),
    ("docs/training.md", r"at most (\d+)% of its free memory", held("DEVICE_DATA_SHARE", SIDES, scale=100)),
    ("docs/training.md", r"the loss is read back every (\d+) steps", gpu_loss_reads),
    ("docs/results.md", r"one class makes up (\d+)% or more",
     held("COLLAPSE_SHARE", "attrfit.evaluation.metrics", scale=100)),
    ("docs/results.md", r"and by at least ([\d.]+)", held("VAL_TEST_MIN_GAP", FINDINGS)),
    ("docs/results.md", r"train accuracy is ([\d.]+) or more above", held("OVERFIT_GAP", FINDINGS)),
    ("docs/results.md", r"intervals \((\d+) resamples of the scored images",
     held("N_BOOT", "attrfit.evaluation.bootstrap")),
    ("docs/results.md", r"\((\d+) resamples by default", lambda: cli_default("compare", "--n-boot")),
    ("docs/results.md", r"the (\d+) most frequent classes",
     held("MATRIX_CLASSES", "attrfit.evaluation.figures")),
    ("docs/results.md", r"\((\d+) per head, fewer", held("PER_HEAD", MISTAKES)),
    ("docs/results.md", r"(\d+) in all, so a report", held("MAX_THUMBNAILS", MISTAKES)),
    ("docs/data.md", r"\(over (\d+) classes", held("MAX_ID_CLASSES", LABELS)),
    ("docs/data.md", r"under (\d+) rows each", held("MIN_ROWS_PER_CLASS", LABELS)),
    ("docs/data.md", r"over (\d+) distinct numbers", held("MAX_NUMERIC_CLASSES", LABELS)),
    ("docs/prediction.md", r"`--batch-size`, (\d+) by default", lambda: cli_default("predict", "--batch-size")),
]


@pytest.mark.parametrize("document, pattern, code", FIGURES, ids=[f"{d}:{p[:30]}" for d, p, _ in FIGURES])
def test_documented_figure_equals_the_code(document, pattern, code):
    text = re.sub(r"\s+", " ", (ROOT / document).read_text(encoding="utf-8"))
    found = re.findall(pattern, text)
    assert found, f"{document}: no figure matching {pattern!r}: the sentence changed; update FIGURES"
    expected = code()
    wrong = [f for f in found if round(float(f), 9) != round(float(expected), 9)]
    assert not wrong, f"{document}: {wrong} where the code holds {expected}"


def test_every_document_the_code_points_to_exists():
    """Comments and docstrings point to the measurement behind a rule (docs/experiments/...): each such file is
    there, so a renamed page breaks this test, not the pointer."""
    pointers = {(p.relative_to(ROOT), m.group(0)) for p in (ROOT / "src").rglob("*.py")
                for m in re.finditer(r"(?:docs/[\w/.-]+\.md|BENCHMARKS\.md|ARCHITECTURE\.md)", p.read_text())}
    missing = sorted(f"{where}: {name}" for where, name in pointers if not (ROOT / name.rstrip(".")).is_file())
    assert pointers and not missing, missing
