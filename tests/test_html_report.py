"""report.html from a run directory written by the pipeline's stages for a tiny model, checked as text and in
headless Chromium (renders without script errors, every image loads)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from fairprune.cli import main
from fairprune.core.errors import PersistError
from fairprune.core.summary import generations, headline_rows
from fairprune.viz.html import build_report
from fairprune.viz.rundata import load_run
from fairprune.testing.runs import sample_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: injected into a copy of the page: records script errors and broken images in the title
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e.type)); }, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  document.title = 'PROBE images=' + imgs.length + ' bad=' + bad + ' errors=' + window.__errors.length;
});
</script>"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return sample_run(tmp_path_factory.mktemp("viz"))


@pytest.fixture(scope="module")
def full_page(run_dir) -> str:
    """The report with the model-loading plots (PCA, tokens) too."""
    return build_report(run_dir, with_models=True).read_text()


def test_report_holds_summary_plots_tables_and_generations(run_dir, full_page):
    page = full_page
    run = load_run(run_dir)
    for label, value in headline_rows(run.metrics):
        assert f"<td>{label}</td><td>{value}</td>" in page.replace("&#x27;", "'")
    plots = re.findall(r'<figure id="plot-(\w+)"><img alt="[^"]+" src="data:image/png;base64,', page)
    assert plots == ["profile", "neurons", "scatter", "pca", "tokens"]
    assert page.count('<div class="gen">') == len(generations(run.metrics)) > 0
    assert "<h4>activation_bias: layers</h4>" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained
    assert "Notes" not in page


def test_run_writes_report_without_model_plots(run_dir):
    page = build_report(run_dir).read_text()  # as at the end of every run
    assert re.findall(r'<figure id="plot-(\w+)">', page) == ["profile", "neurons", "scatter"]


def test_report_command_and_plot_command(run_dir, tmp_path, capsys):
    assert main(["report", str(run_dir), "--no-models"]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report.html")
    out = tmp_path / "scatter.svg"
    assert main(["plot", "scatter", str(run_dir), "--out", str(out)]) == 0
    assert out.read_text().count("<svg") == 1
    assert main(["plot", "pareto", str(run_dir)]) == 1  # not a sweep: a clear error, not a traceback
    assert "sweep.json" in capsys.readouterr().err


def test_not_a_run_directory_is_named(tmp_path):
    with pytest.raises(PersistError, match=str(tmp_path)):
        build_report(tmp_path)


# CI sets FAIRPRUNE_REQUIRE_CHROMIUM (and installs the package), so there the check can never be skipped
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("FAIRPRUNE_REQUIRE_CHROMIUM"),
                    reason="needs Debian's chromium package")
def test_report_renders_in_headless_chromium(full_page, tmp_path):
    page = full_page.replace("<head>", "<head>" + PROBE, 1)
    probe = tmp_path / "probe.html"
    probe.write_text(page)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    done = subprocess.run([CHROMIUM, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    title = re.search(r"<title>(.*?)</title>", done.stdout)
    assert title, done.stderr[-2000:]
    assert title.group(1) == "PROBE images=5 bad=0 errors=0"
    assert "Uncaught" not in done.stderr and ":CONSOLE" not in done.stderr
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,1600", f"--screenshot={shot}", probe.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("FAIRPRUNE_SCREENSHOT"):  # refresh the README's picture: FAIRPRUNE_SCREENSHOT=docs/report.png
        shutil.copy(shot, os.environ["FAIRPRUNE_SCREENSHOT"])
