"""attrfit: train multi-head image attribute classifiers from scratch, honestly measured."""

__version__ = "0.1.0"

from attrfit.core.errors import AttrfitError



def load(checkpoint_or_run, device: str = "cpu"):
    """A predictor for a trained model: ``attrfit.load("runs/x").predict(images)``.

    See :class:`attrfit.serving.predict.Predictor`.
    """
    from attrfit.serving.predict import Predictor

    return Predictor.from_checkpoint(checkpoint_or_run, device=device)


__all__ = ["AttrfitError", "__version__", "load"]
