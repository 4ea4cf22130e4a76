"""Causal language modelling: the ``text_lm`` task, the ``causal_lm`` model family.

Serves the three LM reference specs (savant, aura_hippocampal, cognate_phase1):

- ``tokenizer``  byte-level tokenizer (default) and an optional trained BPE
- ``synthetic``  a deterministic corpus of arithmetic, logic and recall problems
- ``corpus``     reading jsonl / text files, train/val split, tokenise-once cache
- ``data``       packing and the deterministic (seed, rank, i) -> micro-batch map
- ``task``       ``build_task``: batches, metrics, generation
- ``model``      ``build_model``: pre-norm transformer with optional modules
- ``memory``     hippocampal place-cell + replay memory, Titans LTM + MAG, ACT head
- ``size``       torch-free parameter count for ``specrun plan``

Importing this package imports nothing heavy; the submodules that need torch
import it themselves.
"""
