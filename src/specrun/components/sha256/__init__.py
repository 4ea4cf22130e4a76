"""SHA-256 next-state prediction: trace generation, producers, task and model.

Kept import-free on purpose: producer processes import ``trace`` and
``producers`` from this package and must not pay for torch.
"""
