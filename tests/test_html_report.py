"""report.html from a run directory written by the pipeline's stages for a tiny model, checked as text and in
headless Chromium (renders without script errors, every image loads)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from fairprune.cli import main
from fairprune.core.contract.errors import PersistError
from fairprune.core.contract.summary import generations, headline_rows
from fairprune.testing.runs import sample_run
from fairprune.viz.html import build_report
from fairprune.viz.run_plots import PLOTS
from fairprune.viz.rundata import load_run

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
    """The report the run itself wrote: every picture, the PCA and token plots from the data the run stored."""
    return (run_dir / "report.html").read_text()


def test_report_holds_summary_plots_tables_and_generations(run_dir, full_page):
    page = full_page
    run = load_run(run_dir)
    for label, value in headline_rows(run.metrics):
        assert f"<td>{label}</td><td>{value}</td>" in page.replace("&#x27;", "'")
    plots = re.findall(r'<figure id="plot-(\w+)"><img alt="[^"]+" src="data:image/png;base64,', page)
    assert plots == ["profile", "neurons", "scatter", "pca", "tokens"]
    assert page.count('<div class="gen">') == len(generations(run.metrics)) > 0
    assert "<h4>activation_bias: layers</h4>" in page
    assert "<h3>activation_pictures</h3>" in page and "activation_pictures: pca" not in page  # drawn, not tabled
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained
    assert "Notes" not in page


def test_stored_pictures_are_what_the_models_give(run_dir, monkeypatch):
    from fairprune.core.method.collect import collect_pooled
    from fairprune.viz import run_plots
    from fairprune.viz.activations import PCAProjection, pca_projection, token_distances

    run = load_run(run_dir)
    base, pruned, tokenizer, groups = run_plots.load_models(run)
    stored = PCAProjection.from_rows(run.table("activation_pictures", "pca"))
    layer = run.table("activation_pictures", "pca")[0]["layer"]
    assert layer == base.config.num_hidden_layers // 2
    pooled = {label: collect_pooled(m, tokenizer, groups, site="residual", pooling="mean", layers=[layer],
                                    progress=False).pooled[layer] for label, m in (("base", base), ("pruned", pruned))}
    fresh = pca_projection(pooled)
    for label in ("base", "pruned"):
        np.testing.assert_allclose(stored.points[label], fresh.points[label], atol=1e-4)
        assert stored.distance[label] == pytest.approx(fresh.distance[label], rel=1e-5)
    tokens = run.table("activation_pictures", "tokens")[0]
    assert (tokens["prompt_a"], tokens["prompt_b"]) == groups[0].prompts[:2]
    for label, model in (("base", base), ("pruned", pruned)):
        fresh_tokens = token_distances(model, tokenizer, *groups[0].prompts[:2])
        np.testing.assert_allclose(np.asarray(tokens[label]), fresh_tokens.distances, atol=1e-6)
    monkeypatch.setattr(run_plots, "load_models", lambda run: pytest.fail("the stored data must suffice"))
    page = build_report(run_dir).read_text()  # as at the end of every run, and with `fairprune report`
    assert re.findall(r'<figure id="plot-(\w+)">', page) == ["profile", "neurons", "scatter", "pca", "tokens"]


def test_run_without_stored_pictures_reloads_the_models_when_asked(run_dir, tmp_path):
    old = tmp_path / "run"
    shutil.copytree(run_dir, old)
    metrics = json.loads((old / "metrics.json").read_text())
    del metrics["evaluation"]["activation_pictures"]  # a run from before the evaluator, or without it
    (old / "metrics.json").write_text(json.dumps(metrics))
    assert re.findall(r'<figure id="plot-(\w+)">', build_report(old).read_text()) == ["profile", "neurons", "scatter"]
    page = build_report(old, with_models=True).read_text()
    assert re.findall(r'<figure id="plot-(\w+)">', page) == ["profile", "neurons", "scatter", "pca", "tokens"]


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


@pytest.mark.integration
def test_demo_config_report_embeds_every_picture_and_nothing_external(tmp_path):
    """The shipped demo config on SmolLM2, every evaluator of it run; only data sizes are shorter, for time (the
    capability cost's text, a sample of attribute-recall prompts: ``demo_helpers.trimmed``): five pictures,
    all inline, the neuron picture the attribution one."""
    from demo_helpers import demo_overrides, shipped_demo, trimmed

    from fairprune.commands.demo import DEMO_CONFIG
    from fairprune.core.contract.config import load_config
    from fairprune.core.run.pipeline import run

    expected = trimmed(shipped_demo())
    assert "activation_pictures" in [e["name"] for e in expected["evaluation"]["evaluators"]]
    result = run(DEMO_CONFIG, demo_overrides(tmp_path / "demo"), progress=False)
    ran = load_config(result.output_dir / "config.yaml").model_dump(mode="json")
    expected["output"]["dir"] = str(tmp_path / "demo")
    assert ran == expected  # the shipped config, only data sizes shortened
    page = (result.output_dir / "report.html").read_text()
    assert re.findall(r'<figure id="plot-(\w+)"><img', page) == ["profile", "neurons", "scatter", "pca", "tokens"]
    references = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert references and all(ref.startswith(("data:image/png;base64,", "#")) for ref in references)
    assert PLOTS["scatter"].attribution_caption in page.replace("&#x27;", "'")
