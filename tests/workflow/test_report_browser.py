"""The Snakemake HTML report of a finished reduced demo, opened in a real headless browser.

What a user sees is what the report's JavaScript app renders, not the HTML file: the app is
run in Debian's chromium (``--dump-dom`` after ``--virtual-time-budget``, and a screenshot), and
the test checks that the result categories, the tables and the figures are there and that no
figure is broken (every embedded image decodes). Skipped, with the install line, where chromium
is absent (.ci/run installs it).
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from support.reduced_demo import REDUCED_TASKS, snakemake_cmd

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CATEGORIES = ["Tables", "Figures", "Expert training curves", "Attention and gate heatmaps"]


def _chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None, "the report fixture skips the tests without chromium"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
           "--window-size=1400,1000", *args, url]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def report(resumed_run) -> Path:
    if CHROMIUM is None:
        pytest.skip("chromium not installed: apt-get update && apt-get install -y --no-install-recommends chromium")
    path = resumed_run.workdir / "browser_report.html"
    out = subprocess.run(snakemake_cmd(resumed_run.workdir, resumed_run.config, "--report", str(path)),
                         check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def dom(report) -> str:
    out = _chromium(report.as_uri(), "--dump-dom")
    assert out.returncode == 0 and "<body" in out.stdout, out.stderr[-2000:]
    return out.stdout


def test_the_app_ran_and_shows_every_result_category(dom):
    text = re.sub(r"<[^>]+>", " ", dom)
    for category in CATEGORIES:
        assert category in text, f"category {category!r} not rendered"
    assert "Workflow" in text or "workflow" in text


def test_every_table_and_figure_is_in_the_report(report):
    html = report.read_text(errors="replace")
    for name in ("benchmark", "ranks", "summary", "cost", "gate_weights"):
        assert f"{name}.html" in html, name
    for name in ("heatmap", "gains", "gate_weights", "cost"):
        assert f"{name}.png" in html, name
    for task in REDUCED_TASKS:
        assert f"curves/{task}.png" in html and f"attention/{task}.png" in html, task


def test_no_embedded_image_is_broken(report):
    html = report.read_text(errors="replace")
    images = re.findall(r"data:image/png;[^,\"]*base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) >= 4 + 2 * len(REDUCED_TASKS), f"only {len(images)} PNG images embedded"
    for data in images:
        picture = imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert picture.shape[0] > 50 and picture.shape[1] > 50


def test_screenshot_is_a_rendered_page(report, tmp_path):
    shot = tmp_path / "report.png"
    out = _chromium(report.as_uri(), f"--screenshot={shot}")
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1000, 1400)
    assert np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0).shape[0] > 50, "a blank page"
