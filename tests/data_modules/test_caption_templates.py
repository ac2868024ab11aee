"""The caption templates: every template names every descriptor so a keyword parser reads it
back."""

from __future__ import annotations

import pytest

from data_modules.captions import CAPTION_TEMPLATES, render_caption

from conftest import parse_caption


@pytest.mark.parametrize("template", range(len(CAPTION_TEMPLATES)))
def test_every_template_renders_all_phrases(template):
    attrs = {"gender": "female", "pitch": "high", "volume": "low", "speed": "slow", "emphasis": "ball"}
    caption = render_caption(attrs, template=template)
    assert parse_caption(caption) == attrs
    assert caption[0].isupper() and caption.endswith(".")
    no_emphasis = render_caption({**attrs, "emphasis": None}, template=template)
    assert parse_caption(no_emphasis) == {**attrs, "emphasis": None}
    assert len(CAPTION_TEMPLATES) >= 4
