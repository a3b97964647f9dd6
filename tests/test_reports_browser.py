"""report.html in a real headless browser (Chromium from the system packages).

Two checks: a screenshot of the page shows the figures (the method colours are painted in
quantity, which text and tables alone never do), and the DOM after load reports every <img> as
decoded from its data: URI with a non-zero natural size.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from reports import build_report
from reports.figures import COLOURS
from tests.test_reports import copy_run, keep_task

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)

PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map((i) => ({
    complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
    inline: i.src.startsWith("data:image/png;base64,")}));
  const marker = document.createElement("pre");
  marker.id = "probe";
  marker.textContent = JSON.stringify(images);
  document.body.appendChild(marker);
});
</script>"""


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    run = keep_task(copy_run(tmp), "toy_sentiment")  # 3 figures: overview, strength, fluency
    return build_report([run]).parent / "report.html"


def colour_pixels(image: np.ndarray, hex_colour: str) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return int((np.abs(image[..., :3] - rgb).max(axis=-1) < 0.06).sum())


def test_screenshot_shows_the_figures(page, tmp_path):
    shot = tmp_path / "page.png"
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    image = matplotlib.image.imread(shot)  # (2000, 1280, 3 or 4) floats in [0, 1]
    assert image.shape[:2] == (2000, 1280)
    ink = (image[..., :3].mean(axis=-1) < 0.9).mean()
    assert ink > 0.05, f"the page looks blank ({ink:.1%} non-white)"
    # Both methods' colours are painted: interval lines and markers in the overview's forest
    # plot (a method that stays at strength 0 is a marker alone there), lines and bands below.
    for method, colour in (("prompting", COLOURS[0]), ("meandiff", COLOURS[1])):
        assert colour_pixels(image, colour) > 500, method


def test_every_image_decodes_from_its_data_uri(page, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=10000", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(images) == 3
    for image in images:
        assert image["inline"] and image["complete"]
        assert image["width"] > 400 and image["height"] > 200
