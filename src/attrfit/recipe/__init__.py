"""What a run trains and how: the typed configuration (``config``) and the LR/momentum schedules as pure functions of progress (``schedule``).
"""
