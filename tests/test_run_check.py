"""``fairprune run CONFIG --check``: every check a run makes before loading the model, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairprune.cli import main as cli_main
from fairprune.testing import snapshot

DEMO = str(Path(__file__).resolve().parents[1] / "examples" / "fair-smollm2.yaml")


def test_check_prints_what_would_run_and_loads_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import fairprune.core.io.sources as sources

    def no_loading(*args, **kwargs):
        raise AssertionError("--check loaded a model")

    monkeypatch.setattr(sources, "load_model", no_loading)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    assert cli_main(["run", DEMO, "--check", "--set", f"output.dir={out}"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("config ok")
    assert "smollm2-135m (source 'smollm2-135m')" in text and "attribution on race" in text
    assert "random_control" in text and str(out) in text and "replaced" not in text
    assert snapshot(tmp_path) == before and not out.exists()


def test_check_says_an_existing_output_would_be_replaced(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "plan.json").write_text("{}")
    assert cli_main(["run", DEMO, "--check", "--set", f"output.dir={out}"]) == 0
    assert "(its contents would be replaced)" in capsys.readouterr().out
    assert (out / "plan.json").read_text() == "{}"


@pytest.mark.parametrize(("override", "expected"), [
    ("model.source=./no-such-model", "error: model.source: no such model directory or file: './no-such-model'"),
    ("model.source=./absent.gguf", "error: model.source: GGUF file absent.gguf does not exist"),
    ("method.cloze_check.check_limit=400", "method.cloze_check.check_limit: 400 is not below the 336 passages"),
    ("model.device_map=gpu", "error: invalid config: model.device_map: unknown strategy 'gpu'"),
    ("evaluation.evaluators=[no_such_evaluator]", "no_such_evaluator"),
    ("method.cloze_check.check_limit=0", "method.cloze_check.check_limit"),
    ("bias.axes=[]", "bias: axes is empty and prompts is not set, so there is nothing to analyse"),
])
def test_check_refuses_what_run_refuses_in_one_line(tmp_path, capsys, override, expected):
    assert cli_main(["run", DEMO, "--check", "--set", f"output.dir={tmp_path / 'out'}", "--set", override]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_check_refuses_a_hub_id_it_could_neither_download_nor_read_from_the_cache(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert cli_main(["run", DEMO, "--check", "--set", f"output.dir={tmp_path / 'out'}",
                     "--set", "model.source=fairprune-test/tiny-llama"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model.source: 'fairprune-test/tiny-llama' is not in the local Hugging Face cache")


def test_a_config_or_model_path_of_the_wrong_kind_says_what_it_is(tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "notes.txt").write_text("mine")
    cases = [(["run", str(tmp_path), "--check"], f"error: {tmp_path} is a directory; give a config file"),
             (["run", str(tmp_path / "empty.yaml"), "--check"], "the top level must be a mapping of sections "),
             (["run", DEMO, "--check", "--set", f"model.source={tmp_path}"],
              f"error: model.source: '{tmp_path}' is a directory without a config.json"),
             (["run", DEMO, "--check", "--set", f"model.source={tmp_path / 'notes.txt'}"],
              "is a file but not a .gguf file")]
    for argv, expected in cases:
        assert cli_main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err


def test_a_missing_relative_model_directory_is_not_taken_for_a_hub_id(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert cli_main(["run", DEMO, "--check", "--set", "output.dir=out", "--set", "model.source=models/llama"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model.source: no such model directory: 'models/llama'"), err


def test_sweep_check_prints_the_grid_and_refuses_what_sweep_refuses(tmp_path, capsys, monkeypatch):
    import fairprune.core.io.sources as sources

    def no_loading(*args, **kwargs):
        raise AssertionError("--check loaded a model")

    monkeypatch.setattr(sources, "load_model", no_loading)
    out = tmp_path / "out"
    assert cli_main(["sweep", DEMO, "--check", "--set", f"output.dir={out}"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("config ok") and "grid         3 points" in text
    assert "judged by    output_bias.js_reduction_pct" in text and not out.exists()
    assert cli_main(["sweep", DEMO, "--check", "--set", f"output.dir={out}",
                     "--set", "pruning.recovery={epochs: 1}"]) == 1
    assert capsys.readouterr().err.startswith("error: pruning.recovery: a sweep restores only")


def test_demo_check_loads_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import fairprune.core.io.sources as sources

    def no_loading(*args, **kwargs):
        raise AssertionError("--check loaded a model")

    monkeypatch.setattr(sources, "load_model", no_loading)
    assert cli_main(["demo", "--check", "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert text.startswith("config ok") and "smollm2-135m" in text and not (tmp_path / "out").exists()


def test_sweep_and_check_release_the_output_directory_when_they_end(tmp_path):
    # called from Python (a notebook), not through the CLI's own scope: a claim kept would let a later
    # run into the same directory skip its checks
    from fairprune.core.io.outputs import holds_claim
    from fairprune.core.run.pipeline import check
    from fairprune.core.run.sweep import sweep

    out = tmp_path / "out"
    check(DEMO, [f"output.dir={out}"])
    assert not holds_claim(out.absolute())
    with pytest.raises(Exception, match="pruning.recovery"):
        sweep(DEMO, [f"output.dir={out}", "pruning.recovery={epochs: 1}"])
    assert not holds_claim(out.absolute())
