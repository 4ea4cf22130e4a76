"""specrun: a training run as a reviewable file."""

__version__ = "0.1.0"
