"""Evaluation: the decoding sweep, metrics by family, grounding checks, plots."""
