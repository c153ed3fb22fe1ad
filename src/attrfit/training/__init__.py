"""Training: the run and its epochs with checkpoints and exact resume (``loop``), the trainer and its loss, the
wall-time budget, the LR range test, torchrun, experiment trackers, the label audit.
"""
