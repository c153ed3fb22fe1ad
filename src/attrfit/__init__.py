"""attrfit: train multi-head image attribute classifiers from scratch, honestly measured."""

__version__ = "0.1.0"

from attrfit.errors import AttrfitError

__all__ = ["AttrfitError", "__version__"]
