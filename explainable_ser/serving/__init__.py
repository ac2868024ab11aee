"""Serving: the Explainer (Python API) and the language check."""
