"""Interpretable speech-descriptor annotation for corpora without captions (IEMOCAP, MELD ...).

:mod:`.measure` measures each utterance (F0, loudness, speaking rate), :mod:`.bins` turns the
measurements into SpeechCraft's bins, :mod:`.pipeline` writes them and a caption into each
record, :mod:`.cli` is ``python -m data_modules.annotate``. Methods: METHODS.md (this folder).
"""

# The package answers for its command: callers look ``main`` up on it (tests/test_cli_errors.py).
from data_modules.annotate.cli import main

__all__ = ["main"]
