"""The ``attrfit`` command line: a thin layer that parses arguments and calls the stages.

The only package that uses argparse.
"""

from attrfit.cli.app import main

__all__ = ["main"]
