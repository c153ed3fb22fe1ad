"""attrfit: train multi-head image attribute classifiers from scratch, honestly measured.

The Python API, as first-class as the command line (which calls these same functions)::

    import attrfit

    lr = attrfit.find_lr("labels.csv", size="128x64")["onecycle_max_lr"]    # LR range test
    run = attrfit.train("labels.csv", size="128x64", epochs=30, lr=lr)     # a run folder
    attrfit.evaluate(run).mean.balanced_accuracy                           # held-out test side
    attrfit.load(run).predict(["a.jpg", "b.jpg"]).labels["gender"]         # predictions

Options are the config's keys or flag names (``lr``, ``cutout``, ``optim.weight_decay``),
checked exactly as on the command line; ``attrfit train --help`` lists them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from attrfit.core.errors import AttrfitError
from attrfit.core.version import __version__

if TYPE_CHECKING:
    from attrfit.evaluation.results import Results


def _config(csv, config, options: dict):
    """A checked TrainConfig from a config (object or TOML/YAML file), the CSV and keyword options."""
    from attrfit.core import arguments
    from attrfit.recipe.config import TrainConfig, apply, load_file

    cfg = config if isinstance(config, TrainConfig) else TrainConfig()
    if config is not None and not isinstance(config, TrainConfig):
        path = arguments.path(config, "config (a TrainConfig, or a TOML/YAML file)")
        cfg = apply(cfg, load_file(path), source=str(path))
    if csv is not None:
        options = {**options, "data.csv": str(arguments.path(csv, "csv"))}
    return apply(cfg, options, source="keyword options")


def train(csv: str | Path | None = None, *, config=None, run_dir: str | Path | None = None,
          resume: str | Path | None = None, progress: bool = True, **options) -> Path:
    """Train from scratch on a labels CSV (or continue ``resume``); return the run folder.

    The held-out split is made once beside the CSV (or read, and verified); the best epoch
    by the val mean is scored once on the test side into ``RUN/results.json``.

    Example:
        >>> run = attrfit.train("data/labels.csv", size="128x64", epochs=30, cutout=0.25)  # doctest: +SKIP
        >>> attrfit.train(resume=run)  # continue a stopped run exactly  # doctest: +SKIP
    """
    from attrfit.core import arguments
    from attrfit.training.loop import fit

    if resume is not None:
        resume = arguments.path(resume, "resume")
        if csv is not None or config is not None or options or run_dir is not None:
            raise AttrfitError("resume takes the data, split and options from the run folder; give nothing else")
    run_dir = arguments.optional_path(run_dir, "run_dir")
    cfg = None if resume is not None else _config(csv, config, options)
    return fit(cfg, run_dir=run_dir, resume=resume, progress=progress)


def evaluate(run: str | Path, side: str = "test", *, tta: bool | None = None, csv: str | Path | None = None,
             device: str = "auto", progress: bool = True, decide: str | None = None) -> Results:
    """Per-head metrics of a run's best checkpoint (or a .pt file) on one side of its split.

    Returns a :class:`attrfit.evaluation.results.Results`: ``.heads[HEAD]`` (accuracy, balanced_accuracy,
    majority_accuracy, macro_f1, n, ...), ``.mean``, and ``.to_json()``, the same shape as ``RUN/results.json``
    (NaN there is null). ``tta`` (mirror averaging) defaults to the run's --tta; ``decide`` (the decision
    rule: most-probable, prior-corrected, threshold-balanced, threshold-f1) to the run's own.

    Example:
        >>> attrfit.evaluate("runs/demo").mean.accuracy  # doctest: +SKIP
        0.823
        >>> attrfit.evaluate("runs/demo").heads["age"].n  # doctest: +SKIP
        412
    """
    from attrfit.evaluation.scoring import evaluate_checkpoint

    return evaluate_checkpoint(run, side, tta, csv, progress, device, decide)


def find_lr(csv: str | Path | None = None, *, config=None, out: str | Path | None = None, min_lr: float = 1e-6,
            max_lr: float = 10.0, steps: int = 100, repeats: int = 3, rule: str = "valley",
            force: bool = False, progress: bool = True, **options) -> dict:
    """LR range test on the train side; model and optimizer come back untouched.

    Returns the curves, each rule's suggestion and ``onecycle_max_lr`` (what ``--lr auto``
    uses); with ``out`` also writes ``lr_find.json`` and ``lr_find.png`` there (checked before the sweep:
    never into a run's folder, and existing files are replaced only with ``force``).

    Example:
        >>> attrfit.find_lr("data/labels.csv", size="128x64")["onecycle_max_lr"]  # doctest: +SKIP
        0.85
    """
    from attrfit.core import arguments
    from attrfit.data.load import load_data
    from attrfit.training.sides import make_sides
    from attrfit.training.lr_find import check_out, check_sweep_args, find_lr as sweep

    out = arguments.optional_path(out, "out")
    check_sweep_args(arguments.number(min_lr, "min_lr"), arguments.number(max_lr, "max_lr"),
                     arguments.whole(steps, "steps"), arguments.whole(repeats, "repeats"))
    cfg = _config(csv, config, options)
    if out is not None:  # before anything is read: the sweep takes minutes
        check_out(out, arguments.flag(force, "force"), cfg.data)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    data = load_data(cfg.data, progress=progress)
    return sweep(cfg, data.schema, make_sides(data), out, min_lr, max_lr, steps, repeats, rule, progress=progress)


def load(checkpoint_or_run, device: str = "cpu", compile: bool = False, decide: str | None = None):
    """A predictor for a trained model: ``attrfit.load("runs/x").predict(images)``.

    See :class:`attrfit.serving.predict.Predictor` (``compile`` and ``decide``, the decision rule:
    :meth:`~Predictor.from_checkpoint`).
    """
    from attrfit.serving.predict import Predictor

    return Predictor.from_checkpoint(checkpoint_or_run, device=device, compile=compile, decide=decide)


__all__ = ["AttrfitError", "__version__", "evaluate", "find_lr", "load", "train"]
