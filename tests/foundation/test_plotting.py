"""Charts with Chinese labels draw real glyphs where a CJK font is installed (scripts/setup_env.sh installs one as
root), and still render, with boxes, where none is."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fenlei import plotting
from fenlei.training.reporting import confusion_matrix_png

LABELS = ["股票", "财经", "电竞", "story"]


def _glyph_warnings(draw) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = draw()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return [str(w.message) for w in caught if "Glyph" in str(w.message)]


def test_cjk_labels_draw_without_missing_glyphs() -> None:
    if not plotting.installed_cjk_fonts():
        pytest.skip("no CJK font on this machine (as root: apt-get install fonts-wqy-microhei)")
    gold, pred = np.array([0, 1, 2, 3, 0]), np.array([0, 1, 1, 3, 1])
    assert _glyph_warnings(lambda: confusion_matrix_png(gold, pred, LABELS)) == []
    import matplotlib

    fonts = matplotlib.rcParams["font.family"]
    assert fonts[0] == "DejaVu Sans" and plotting.installed_cjk_fonts()[0] in fonts  # Latin text keeps its font


def test_without_a_cjk_font_charts_still_render(monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    monkeypatch.setattr(plotting, "_configured", False)
    monkeypatch.setattr(plotting, "installed_cjk_fonts", lambda: [])
    with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
        gold = np.array([0, 1, 2, 3])
        missing = _glyph_warnings(lambda: confusion_matrix_png(gold, gold, LABELS))
    assert missing and all("missing from font" in m for m in missing)
