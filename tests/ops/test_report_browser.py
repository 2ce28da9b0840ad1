"""The run report in a real headless browser (Chromium): the page renders, and every image decodes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.browser_support import NO_BROWSER, dump_dom_with_image_probe, find_browser, require_browser, screenshot
from tests.ops.conftest import copy_run, main_status

# Skipped at collection where no browser is found, before the tiny run is fitted for nothing.
pytestmark = [pytest.mark.browser, pytest.mark.skipif(find_browser() is None, reason=NO_BROWSER)]


def test_report_renders_and_its_images_load_in_a_browser(tested_run: Path, tmp_path: Path) -> None:
    browser = require_browser()
    run = copy_run(tested_run, tmp_path / "run")
    assert main_status(["report", str(run)]) == 0
    page = run / "report.html"

    dom = dump_dom_with_image_probe(browser, page, tmp_path)
    images = re.findall(r"<img\b[^>]*>", dom)
    assert len(images) == 3, images  # learning curves, reliability diagram, confusion matrix
    assert re.search(r'data-images="3/3"', dom), "not every image decoded"
    for tag in images:
        assert 'data-loaded="yes"' in tag
        width = int(re.search(r'data-natural-width="(\d+)"', tag).group(1))
        assert width >= 300, tag[:200]  # matplotlib figures of several hundred pixels, not a broken-image icon
    assert "<h1>Run report: " in dom and 'id="errors"' in dom

    # The screenshot is a page, not a blank window: much of it is not white, with many colours (the charts).
    from PIL import Image

    shot = np.asarray(Image.open(screenshot(browser, page, tmp_path / "page.png")).convert("RGB"))
    assert shot.shape[:2] == (2400, 1280)
    not_white = (shot < 245).any(axis=2).mean()
    assert 0.05 < not_white < 0.95, not_white
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 200


def test_comparison_page_renders_in_a_browser(tested_run: Path, tmp_path: Path) -> None:
    browser = require_browser()
    runs = [copy_run(tested_run, tmp_path / name) for name in ("a", "b")]
    output = tmp_path / "comparison.html"
    assert main_status(["report", *map(str, runs), "--output", str(output)]) == 0
    dom = dump_dom_with_image_probe(browser, output, tmp_path)
    assert re.search(r'data-images="1/1"', dom) and "<h1>Run comparison: 2 runs</h1>" in dom


def test_the_image_probe_sees_a_broken_image(tmp_path: Path) -> None:
    """The check above can fail: an image that does not decode is reported as not loaded."""
    import base64

    from fenlei.ops import report_html
    from fenlei.training.reporting import confusion_matrix_png

    browser = require_browser()
    good = report_html.image(confusion_matrix_png(np.array([0, 1]), np.array([0, 0]), ["a", "b"]), "good")
    broken = f'<img src="data:image/png;base64,{base64.b64encode(b"not a png").decode()}" alt="broken">'
    page = tmp_path / "page.html"
    page.write_text(report_html.page("probe", good + broken))
    dom = dump_dom_with_image_probe(browser, page, tmp_path)
    assert 'data-images="1/2"' in dom and dom.count('data-loaded="no"') == 1
