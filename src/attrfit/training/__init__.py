"""Stage 3, training: the loop with checkpoints and exact resume (``loop``), the LR range test, torchrun, experiment trackers.
"""
