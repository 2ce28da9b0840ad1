"""A real headless browser for the tests of static pages (``fenlei report``): Debian's ``chromium-headless-shell``
(``scripts/setup_env.sh`` installs it where it runs as root with apt-get), any Chromium or Chrome on the PATH, or
the executable that ``FENLEI_BROWSER`` names. Tests that need one are marked ``browser`` and skip, saying why,
where none is found."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import pytest

CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_BROWSER = ("no headless browser: install Debian's chromium-headless-shell (scripts/setup_env.sh does, as root "
              "with apt-get: apt-get install --no-install-recommends chromium-headless-shell) or set FENLEI_BROWSER "
              "to a Chromium executable")

# Appended to a test-only copy of the page (the page itself has no JavaScript): after the load event, every image
# says whether it decoded (complete, with a natural width), and the body how many did.
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  let ok = 0;
  for (const img of document.images) {
    const loaded = img.complete && img.naturalWidth > 0;
    img.setAttribute("data-loaded", loaded ? "yes" : "no");
    img.setAttribute("data-natural-width", String(img.naturalWidth));
    ok += loaded ? 1 : 0;
  }
  document.body.setAttribute("data-images", ok + "/" + document.images.length);
});
</script>"""


def find_browser() -> Optional[str]:
    named = os.environ.get("FENLEI_BROWSER")
    if named:
        return named if shutil.which(named) else None
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


def require_browser() -> str:
    browser = find_browser()
    if browser is None:
        pytest.skip(NO_BROWSER)
    return browser


def run_browser(browser: str, page: Path, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Open ``page`` (a file) headless with ``args`` (``--dump-dom``, ``--screenshot=...``) in a fresh profile."""
    with tempfile.TemporaryDirectory(prefix="fenlei-browser-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                   f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args, page.resolve().as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{browser} exited {result.returncode}: {result.stderr[-2000:]}"
    return result


def dump_dom_with_image_probe(browser: str, page: Path, workdir: Path) -> str:
    """The DOM after load of a copy of ``page`` with :data:`IMAGE_PROBE` appended to its body."""
    text = page.read_text(encoding="utf-8")
    assert text.count("</body>") == 1
    probe_copy = workdir / f"probe-{page.name}"
    probe_copy.write_text(text.replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    return run_browser(browser, probe_copy, "--dump-dom").stdout


def screenshot(browser: str, page: Path, out: Path, width: int = 1280, height: int = 2400) -> Path:
    run_browser(browser, page, f"--screenshot={out}", f"--window-size={width},{height}")
    assert out.is_file(), f"{browser} wrote no screenshot"
    return out
