"""The model: the multi-head ResNet (``net``), which layers run in which precision on this machine
(``precision``), and checkpoint files (``checkpoint``).
"""
