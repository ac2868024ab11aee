"""Analysis: notebook helpers."""
