"""``fairprune lm-eval ... --model fairprune``: lm-evaluation-harness's command line on a directory whose layers
have different widths (``--model hf`` refuses it), on a local task, agreeing with lm_eval run in-process."""

from __future__ import annotations

import json

import pytest
import yaml

pytest.importorskip("lm_eval")

import fairprune as fp
from fairprune.cli import main
from fairprune.plugins.evaluators.lm_eval_harness import LmEvalParams, run_tasks, task_configs
from fairprune.testing import tiny_model, tiny_tokenizer

PASSAGES = ["the man was good", "she is a kind teacher", "they went home", "the old doctor works in the city",
            "my friend lives in a new town"]


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-eval")
    model = tiny_model("llama")
    fp.prune(model, {0: [1, 2, 3, 9], 1: [5]})
    fp.save_pretrained(model, tiny_tokenizer(), root / "pruned")
    data = root / "lambada.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in PASSAGES))
    tasks = task_configs(LmEvalParams(lambada_path=str(data)))
    include = root / "tasks"
    include.mkdir()
    for config in tasks.values():
        (include / f"{config['task']}.yaml").write_text(yaml.safe_dump(config))
    return root / "pruned", include, tasks


def lm_eval_args(model: str, directory, include, out) -> list[str]:
    return ["lm-eval", "run", "--model", model, "--model_args", f"pretrained={directory}", "--tasks",
            "fairprune_lambada", "--include_path", str(include), "--batch_size", "4", "--output_path", str(out)]


def test_fairprune_model_type_runs_a_local_task_on_uneven_widths(uneven, tmp_path):
    directory, include, tasks = uneven
    widths = json.loads((directory / "fairprune.json").read_text())["widths"]
    assert len(set(widths)) > 1
    assert main(lm_eval_args("fairprune", directory, include, tmp_path / "out")) == 0
    written = list((tmp_path / "out").rglob("results_*.json"))
    assert len(written) == 1
    results = json.loads(written[0].read_text())["results"]["fairprune_lambada"]
    model, tok = fp.load_pretrained(directory)
    expected = run_tasks(model, tok, tasks, None, 4, backend="hflm")["lambada"]
    assert results["acc,none"] == pytest.approx(expected["acc"])
    assert results["perplexity,none"] == pytest.approx(expected["perplexity"], rel=1e-6)


def test_hf_model_type_cannot_load_the_same_directory(uneven, tmp_path):
    directory, include, _ = uneven
    with pytest.raises(Exception, match="size mismatch|ignore_mismatched_sizes|shape"):
        main(lm_eval_args("hf", directory, include, tmp_path / "out"))


def test_an_unknown_task_is_one_line(uneven, tmp_path, capsys):
    directory, include, _ = uneven
    args = lm_eval_args("fairprune", directory, include, tmp_path / "out")
    args[args.index("fairprune_lambada")] = "no_such_task"
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: lm-eval: ") and "no_such_task" in err[-1], err
