"""What every package uses: errors, atomic file writes and the output policy, options (help + range check per
field), argument checks, number formatting, run folders and their listing, progress bars, memory.

Imports nothing else of attrfit.
"""
