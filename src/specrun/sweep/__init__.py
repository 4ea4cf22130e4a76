"""Sweeps: many runs of one spec, searched with Optuna (``specrun sweep``, docs/sweeps.md).

layout (folders and files, no Optuna), study (the Optuna study), trial (one run),
worker (the ask-run-tell loop). The sweep block itself is language: spec/sweep.py.
"""
