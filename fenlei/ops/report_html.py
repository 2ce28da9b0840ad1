"""Pieces of a self-contained static HTML page: every text escaped, images embedded as PNG data URIs, no
JavaScript, no file or network fetches (the page can be mailed, archived or opened from any folder)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from typing import Any, Optional

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK SC", sans-serif;
       margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { max-width: 640px; overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 0.4rem 0.8rem; margin: 0.5rem 0; }
div.scroll { overflow-x: auto; }
.meta { color: #666; font-size: 0.85rem; } nav a { margin-right: 1rem; } ul.examples { margin: 0; padding-left: 1.2rem; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers rounded for reading, None as an empty cell, the rest as text (escaped)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return esc(f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.3g}")
    return esc(value)


def image(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{esc(alt)}">'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] = (),
          raw: Sequence[bool] = ()) -> str:
    """A table; ``numeric`` right-aligns a column, ``raw`` marks columns whose cells are HTML made here."""
    numeric = list(numeric) or [False] * len(columns)
    raw = list(raw) or [False] * len(columns)
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for value, is_num, is_raw in zip(row, numeric, raw, strict=True):
            css = ' class="num"' if is_num else (' class="text"' if isinstance(value, str) and len(value) > 60 else "")
            cells.append(f"<td{css}>{value if is_raw else fmt(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            "</div>")


def section(anchor: str, title: str, content: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{content}</section>'


def link(href: str, text: str) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def page(title: str, body: str, meta: Optional[str] = None, nav: Sequence[tuple[str, str]] = ()) -> str:
    links = " ".join(link(f"#{anchor}", text) for anchor, text in nav)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n"
            + (f'<p class="meta">{esc(meta)}</p>\n' if meta else "")
            + (f"<nav>{links}</nav>\n" if links else "")
            + body + "\n</body></html>\n")
