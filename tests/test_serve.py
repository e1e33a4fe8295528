"""``fairprune serve`` without a browser: the explorer's measurements and validation, the page's error path,
the command (models fixed at start, localhost, the extra it needs) and that nothing imports Gradio early."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

import fairprune as fp
from fairprune.cli import main
from fairprune.core.contract.errors import PromptError
from fairprune.serve import Explorer, Limits, template_choices
from fairprune.testing import tiny_model, tiny_tokenizer

PAIR = ("the black man works in the city", "the white man works in the city")


@pytest.fixture(scope="module")
def explorer() -> Explorer:
    base = tiny_model("llama", num_hidden_layers=3)
    pruned = copy.deepcopy(base)
    fp.prune(pruned, {0: [1, 2, 3], 2: [5, 6]})
    return Explorer(base, tiny_tokenizer(), pruned, limits=Limits(max_chars=80, max_tokens=12))


@pytest.mark.parametrize(("a", "b", "message"), [
    (PAIR[0], PAIR[0], "identical"),
    ("  ", PAIR[1], "prompt A is empty"),
    (PAIR[0], "", "prompt B is empty"),
    (PAIR[0] + " x" * 40, PAIR[1] + " x" * 40, "prompt A has 111 characters; the limit is 80"),
    ("the black man works in the city and the town is very new",
     "the white man works in the city and the town is very new", "prompt A has 13 tokens; the limit is 12"),
    ("the black man works in the city", "the white man lives in the city", "differ in more than the attribute"),
    ("the black man zebra", "the black man giraffe", "tokenize identically"),
])
def test_bad_pairs_are_refused_with_their_reason(explorer, a, b, message):
    with pytest.raises(PromptError, match=message):
        explorer.compare(a, b)


def test_out_of_range_layer_and_token_count_are_refused(explorer):
    with pytest.raises(PromptError, match="layer 3 is out of range"):
        explorer.compare(*PAIR, layer=3)
    with pytest.raises(PromptError, match="new tokens must be between 1 and 64"):
        explorer.compare(*PAIR, max_new_tokens=65)


def test_compare_measures_both_models_like_the_evaluators(explorer):
    steps = []
    result = explorer.compare(*PAIR, layer=1, max_new_tokens=4, progress=lambda f, what: steps.append(f))
    assert result.labels == ("base", "pruned") and result.group.attributes == ("black", "white")
    assert [row["layer"] for row in result.profile] == [0, 1, 2]
    # layer 0 lost neurons, so its residual stream differs from the base model's from there on
    assert all(row["base"] != row["pruned"] for row in result.profile)
    assert [row["prompt"] for row in result.completions] == list(PAIR)
    generated = fp.evaluate(explorer.base, explorer.pruned, explorer.tokenizer, evaluators=["generations"],
                            params={"generations": {"prompts": list(PAIR), "max_new_tokens": 4}}, progress=False)
    assert result.completions == generated["generations"].tables["generations"]
    states = result.states["base"]
    assert states.states.shape[:3] == (4, len(states.tokens), 2)  # embeddings + 3 layers, aligned columns, 2 prompts
    assert states.tokens[states.diverge_at] == "black / white"
    assert steps == sorted(steps) and steps[-1] == 1.0
    assert set(result.figures()) == {"profile", "pca", "tokens"}


def test_base_only_explorer_shows_one_model(explorer):
    alone = Explorer(explorer.base, explorer.tokenizer)
    result = alone.compare(*PAIR, max_new_tokens=2)
    assert result.labels == ("base",)
    assert all(set(row) == {"layer", "base"} for row in result.profile)
    assert all(set(row) == {"prompt", "base"} for row in result.completions)
    assert set(result.figures()) == {"profile", "pca", "tokens"}


def test_template_choices_fill_prompts_from_axis_templates():
    race = template_choices()["race"]["police_night_walk"]
    assert race.prompts["Black"].startswith("A Black man walked at night")
    assert set(race.prompts) >= {"Black", "white"}


def test_page_answers_bad_input_with_a_message_and_no_plots(explorer):
    pytest.importorskip("gradio")
    from fairprune.serve.app import respond

    status, table, *plots = respond(explorer, PAIR[0], PAIR[0], 1, "suffix", 4)
    assert status.startswith("**Cannot compare:**") and "identical" in status
    assert table == "" and plots == [None, None, None]
    status, table, *plots = respond(explorer, *PAIR, 1, "suffix", 4)
    assert status.startswith("Compared **black** with **white**")
    assert table.count("<tr>") == 3 and all(p is not None for p in plots)


def test_page_takes_no_file_path_or_model_name(explorer):
    gr = pytest.importorskip("gradio")
    from fairprune.serve.app import build_app

    app = build_app(explorer)
    inputs = {type(block).__name__ for fn in app.fns.values() for block in fn.inputs}
    assert inputs <= {"Textbox", "Slider", "Radio", "Dropdown"}
    textboxes = [b for b in app.blocks.values() if isinstance(b, gr.Textbox)]
    assert [b.elem_id for b in textboxes] == ["prompt-a", "prompt-b"]
    assert not [b for b in app.blocks.values() if isinstance(b, (gr.File, gr.UploadButton))]
    runs = [fn for fn in app.fns.values() if fn.name == "run"]  # the model computation
    assert len(runs) == 1 and runs[0].concurrency_limit == 1


def test_serve_command_loads_the_named_models_once_and_listens_on_localhost(explorer, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from fairprune.serve import app

    base_dir, pruned_dir = tmp_path / "base", tmp_path / "pruned"
    explorer.base.save_pretrained(base_dir)
    explorer.tokenizer.save_pretrained(base_dir)
    fp.save_pretrained(explorer.pruned, explorer.tokenizer, pruned_dir, base_model=str(base_dir))
    calls = []
    monkeypatch.setattr(app, "launch", lambda ex, host, port: calls.append((ex, host, port)))
    assert main(["serve", "--model", str(base_dir), "--pruned", str(pruned_dir), "--port", "7999"]) == 0
    (loaded, host, port), = calls
    assert (host, port) == ("127.0.0.1", 7999)
    assert loaded.names == {"base": str(base_dir), "pruned": str(pruned_dir)}
    assert loaded.labels == ("base", "pruned") and loaded.limits.max_tokens == 96


def test_serve_command_refuses_a_pruned_model_of_another_base(explorer, tmp_path, capsys):
    pytest.importorskip("gradio")
    other, pruned_dir = tmp_path / "other", tmp_path / "pruned"
    tiny_model("llama", num_hidden_layers=2).save_pretrained(other)
    explorer.tokenizer.save_pretrained(other)
    fp.save_pretrained(explorer.pruned, explorer.tokenizer, pruned_dir, base_model="tiny")
    assert main(["serve", "--model", str(other), "--pruned", str(pruned_dir)]) == 1
    assert "does not match" in capsys.readouterr().err


def test_serve_command_refuses_a_directory_not_saved_by_fairprune(tmp_path, capsys):
    pytest.importorskip("gradio")
    assert main(["serve", "--model", "tiny", "--pruned", str(tmp_path)]) == 1
    assert "not a model saved by fairprune" in capsys.readouterr().err


def test_serve_without_gradio_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` fail as if not installed
    assert main(["serve", "--model", "smollm2-135m"]) == 1
    assert capsys.readouterr().err.strip() == 'fairprune serve needs Gradio: pip install "fairprune[serve]"'


def test_help_and_import_do_not_load_gradio():
    code = ("import sys, fairprune, fairprune.serve; from fairprune.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('gradio', 'torch', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
