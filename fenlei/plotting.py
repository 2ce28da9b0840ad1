"""matplotlib for fenlei's charts: the Agg backend (no display on a training box) and a font that draws Chinese.

Label names in this project are often Chinese (TNEWS topics, ticket queues), and matplotlib's default DejaVu Sans
has no CJK glyphs: every label would be a row of boxes with a "Glyph missing" warning. matplotlib (>= 3.6) falls
back glyph by glyph along ``font.family``, so the CJK fonts found on this machine go after DejaVu Sans (Latin text
keeps its usual look). ``scripts/setup_env.sh`` installs WenQuanYi Micro Hei where it can (root with apt-get);
without any CJK font the charts still render, with the boxes.
"""

from __future__ import annotations

from typing import Any

# Common CJK sans-serif families, in order of preference (Debian/Ubuntu packages, then macOS and Windows).
CJK_FONTS = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
             "Droid Sans Fallback", "PingFang SC", "Microsoft YaHei", "SimHei")

_configured = False


def installed_cjk_fonts() -> list[str]:
    """The families of :data:`CJK_FONTS` that matplotlib can find here (naming an absent one makes it warn)."""
    from matplotlib import font_manager

    present = {entry.name for entry in font_manager.fontManager.ttflist}
    return [name for name in CJK_FONTS if name in present]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, with the CJK fallback fonts set once per process."""
    global _configured
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not _configured:
        fallback = installed_cjk_fonts()
        if fallback:
            # Glyph fallback runs along font.family only (a generic "sans-serif" there is not expanded for it).
            latin = [f for f in matplotlib.rcParams["font.sans-serif"] if f not in fallback][:1]
            matplotlib.rcParams["font.family"] = latin + fallback
        _configured = True
    return plt
