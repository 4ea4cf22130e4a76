"""Optimizers a spec may name (one module per optimizer family)."""
