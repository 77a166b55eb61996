"""wbcgen: synthetic white-blood-cell images — per-class GANs, a classifier suite to validate
them, and Hugging Face Hub publishing."""

__version__ = "0.1.0"
