"""Core types every stage uses: errors, atomic file writes, options (help + range check per field), run folders, progress bars.

Imports nothing else of attrfit.
"""
