"""Honest numbers: per-head metrics, scoring a checkpoint on a side, the HTML report, comparing runs.

Never imports ``attrfit.training``: scoring a run needs no training machinery.
"""
