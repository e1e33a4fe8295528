"""``fairprune serve`` in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

A tiny model is served on a free port; the test types two prompts, submits, and
waits for every plot and both models' completions; a bad pair shows its message
and the server keeps answering. On the real SmolLM2 (integration) it also takes
the README's screenshot when ``FAIRPRUNE_SERVE_SCREENSHOT`` names a file.
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = bool(os.environ.get("FAIRPRUNE_REQUIRE_CHROMIUM"))

# CI sets FAIRPRUNE_REQUIRE_CHROMIUM and installs the test extra, so there nothing here can be skipped
pytestmark = pytest.mark.skipif(CHROMIUM is None and not REQUIRED, reason="needs Debian's chromium package")
if not REQUIRED:
    pytest.importorskip("gradio")
    pytest.importorskip("playwright")

import fairprune as fp  # noqa: E402
from fairprune.serve import Explorer  # noqa: E402
from fairprune.serve.app import launch  # noqa: E402
from fairprune.testing import tiny_model, tiny_tokenizer  # noqa: E402

PAIR = ("the black man works in the city", "the white man works in the city")
PLOTS = ("plot-profile", "plot-pca", "plot-tokens")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "FAIRPRUNE_REQUIRE_CHROMIUM is set but no chromium is installed"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def serve(explorer: Explorer) -> tuple[object, str]:
    port = free_port()
    app = launch(explorer, port=port, block=False)
    return app, f"http://127.0.0.1:{port}/"


def compare(page, a: str, b: str) -> None:
    page.locator("#prompt-a textarea").fill(a)
    page.locator("#prompt-b textarea").fill(b)
    page.locator("#compare").click()


def wait_for_results(page, n_plots: int, timeout_ms: int) -> None:
    page.locator("#completions table").wait_for(timeout=timeout_ms)
    page.wait_for_function(f"document.querySelectorAll('[id^=plot-] img').length >= {n_plots}", timeout=timeout_ms)


@pytest.fixture(scope="module")
def tiny_server() -> Iterator[str]:
    base = tiny_model("llama", num_hidden_layers=3)
    pruned = copy.deepcopy(base)
    fp.prune(pruned, {0: [1, 2, 3], 2: [5, 6]})
    app, url = serve(Explorer(base, tiny_tokenizer(), pruned))
    yield url
    app.close()


def test_two_prompts_give_every_plot_and_both_completions(browser, tiny_server):
    page = browser.new_page(viewport={"width": 1300, "height": 1600})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(tiny_server)
    compare(page, *PAIR)
    wait_for_results(page, len(PLOTS), 60_000)
    for plot in PLOTS:
        image = page.locator(f"#{plot} img")
        assert image.count() == 1, plot
        assert image.evaluate("img => img.complete && img.naturalWidth > 200"), plot
    rows = page.locator("#completions tbody tr")
    assert rows.count() == 2
    for i, prompt in enumerate(PAIR):
        cells = rows.nth(i).locator("td")
        assert cells.nth(0).inner_text() == prompt
        assert cells.nth(1).inner_text().strip() and cells.nth(2).inner_text().strip()  # base, pruned
    assert page.locator("#serve-status").inner_text().startswith("Compared black with white")
    assert not errors


def test_a_bad_pair_shows_its_message_and_the_server_keeps_going(browser, tiny_server):
    page = browser.new_page()
    page.goto(tiny_server)
    compare(page, PAIR[0], PAIR[0])
    page.get_by_text("Cannot compare").wait_for(timeout=30_000)
    assert "are identical" in page.locator("#serve-status").inner_text()
    assert page.locator("#completions table").count() == 0
    compare(page, PAIR[0], "")
    page.get_by_text("prompt B is empty").wait_for(timeout=30_000)
    compare(page, *PAIR)  # a good pair after two bad ones is answered
    wait_for_results(page, len(PLOTS), 60_000)
    assert "Cannot compare" not in page.locator("#serve-status").inner_text()


def test_template_picker_fills_the_prompts(browser, tiny_server):
    page = browser.new_page()
    page.goto(tiny_server)
    page.get_by_text("Fill the prompts from a bias axis template").click()
    for elem, value in (("axis", "race"), ("template", "police_night_walk"), ("attribute-b", "white")):
        page.locator(f"#{elem} input").click()
        page.get_by_role("option", name=value, exact=True).click()
        page.wait_for_timeout(300)  # the next dropdown's choices arrive from the server
    page.locator("#fill").click()
    page.wait_for_function("document.querySelector('#prompt-b textarea').value.startsWith('A white man walked')")
    assert page.locator("#prompt-a textarea").input_value().startswith("A Black man walked at night")


@pytest.mark.integration
def test_smollm2_explorer_in_the_browser(browser, tmp_path):
    """The real model against a pruned one: ``FAIRPRUNE_SERVE_PRUNED`` names a run directory (else a quick
    arbitrary pruning stands in); ``FAIRPRUNE_SERVE_SCREENSHOT`` saves the page, as in the README:

    FAIRPRUNE_SERVE_PRUNED=runs/fair-smollm2 FAIRPRUNE_SERVE_SCREENSHOT=docs/serve-screenshot.png \\
        pytest tests/test_serve_browser.py -m integration
    """
    if os.environ.get("FAIRPRUNE_SERVE_PRUNED"):
        explorer = Explorer.load("smollm2-135m", os.environ["FAIRPRUNE_SERVE_PRUNED"])
    else:
        base, tokenizer = fp.load_model("smollm2-135m")
        pruned = copy.deepcopy(base)
        fp.prune(pruned, {layer: list(range(0, 1536, 97)) for layer in range(0, 30, 3)})  # arbitrary, visible
        explorer = Explorer(base.eval(), tokenizer, pruned.eval(), names={"base": "smollm2-135m"})
    app, url = serve(explorer)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.goto(url)
        page.locator("#compare").click()  # the page opens with the showcase pair filled in
        wait_for_results(page, len(PLOTS), 240_000)
        assert page.locator("#completions tbody tr").count() == 2
        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:4] == b"\x89PNG"
        if os.environ.get("FAIRPRUNE_SERVE_SCREENSHOT"):
            shutil.copy(shot, Path(os.environ["FAIRPRUNE_SERVE_SCREENSHOT"]))
    finally:
        app.close()
