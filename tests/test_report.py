"""The demo's HTML report loads in headless Chromium: images decode, tables are present."""

import re
import shutil
import subprocess

import pytest

from deconfoundlm.cli import main

pytestmark = pytest.mark.slow  # every test here reads the demo's output

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-decoded', imgs.filter(i => i.complete && i.naturalWidth > 0).length);
  document.body.setAttribute('data-tables', document.querySelectorAll('table').length);
});</script></body>"""


@pytest.fixture(scope="module")
def demo_dir(quick_demo):
    return quick_demo


def test_report_is_self_contained(demo_dir):
    page = (demo_dir / "report.html").read_text()
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page.split("</h1>", 1)[1].replace("https://doi", "")
    assert page.count("data:image/png;base64,") >= 4
    for heading in ("The confounding in the log", "style of headlines drifted", "Diagnostics",
                    "What a naive reward learns", "randomized A/B", "What if a confounder was not named",
                    "Robustness value", "Fluent candidates: what each reward picks",
                    "a toy generator"):
        assert heading in page
    assert "pick different headlines for" in page and "candidates.csv" in page


def test_report_command_needs_a_known_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a reward folder" in err and "nor a demo output" in err and len(err.strip().splitlines()) == 1
    assert "--out" not in err  # no hint that would write a demo over the folder
    assert not (tmp_path / "report.html").exists()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium not installed (make test installs it)")
def test_report_renders_in_headless_chromium(demo_dir, tmp_path):
    page = (demo_dir / "report.html").read_text().replace("</body>", PROBE)
    probe = tmp_path / "probe.html"
    probe.write_text(page)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    images = int(re.search(r'data-images="(\d+)"', dom).group(1))
    decoded = int(re.search(r'data-decoded="(\d+)"', dom).group(1))
    tables = int(re.search(r'data-tables="(\d+)"', dom).group(1))
    assert images >= 4 and decoded == images
    assert tables >= 3
    shot = tmp_path / "shot.png"
    subprocess.run(cmd[:-2] + [f"--screenshot={shot}", "--window-size=1200,3000", (demo_dir / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_demo_report_summary_and_paired_difference(demo_dir):
    import pandas as pd

    page = (demo_dir / "report.html").read_text()
    results = pd.read_csv(demo_dir / "results.csv").set_index("method")["accuracy"]
    diffs = pd.read_csv(demo_dir / "differences.csv").set_index("method")
    summary = page.split("<h2>Summary</h2>", 1)[1].split("<h2>", 1)[0]
    assert f"{results['deconfound']:.1%}" in summary and f"{results['naive']:.1%}" in summary
    d = diffs.loc["deconfound"]
    assert f"{100 * d['difference']:+.1f} points" in summary
    assert f"higher in {int(d['splits_won'])} of {int(d['splits'])} splits" in summary
    assert d["ci_low"] <= d["difference"] <= d["ci_high"]
    assert abs(d["difference"] - (results["deconfound"] - results["naive"])) < 1e-12
    assert "Paired differences from the naive reward" in page
    assert not re.search(r"\d+\.\d+ pairs", page)  # counts are whole numbers
