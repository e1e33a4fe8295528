"""examples/fairness-pruning.ipynb runs, top to bottom, on a tiny model: the test replaces the values of the cell
tagged ``parameters`` (as papermill does) and executes every cell with nbclient in a fresh kernel."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

from fairprune.testing import tiny_char_tokenizer, tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "fairness-pruning.ipynb"


def with_parameters(notebook, values: dict) -> None:
    """Insert a cell assigning ``values`` after the ``parameters`` cell; every name must be a declared parameter."""
    index, cell = next((i, c) for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    declared = set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*=", cell.source, flags=re.M))
    assert set(values) <= declared, f"not parameters of the notebook: {sorted(set(values) - declared)}"
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def outputs(notebook, kind: str) -> list:
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if kind in o.get("data", {})
            or (kind == "stream" and o.get("output_type") == "stream")]


def test_saved_notebook_has_its_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "execute the notebook before committing it"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert len(outputs(notebook, "image/png")) >= 7


def test_notebook_runs_on_a_tiny_model(tmp_path):
    source = tmp_path / "tiny-model"
    tiny_model("llama", num_hidden_layers=3, max_position_embeddings=512).save_pretrained(source)
    tiny_char_tokenizer().save_pretrained(source)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with_parameters(notebook, {"MODEL": str(source), "PARAM_FRACTION": 0.02, "N_BOOT": 20, "MAX_NEW_TOKENS": 3,
                               "WINOBIAS": str(ROOT / "tests" / "data" / "benchmarks" / "winobias"),
                               "WINOBIAS_LIMIT": None, "OUT": str(tmp_path / "pruned")})
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    # the kernel imports this checkout's fairprune, single-threaded like the rest of the suite
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    client.execute(env=env)
    assert len(outputs(notebook, "image/png")) >= 7
    text = "".join("".join(o.get("text", "")) for o in outputs(notebook, "stream"))
    assert "widths as pruned: True; same logits: True" in text
    assert "winobias:" in text and "pct_pro" in text
    assert text.count("  base:   ") == 3 and text.count("  pruned: ") == 3
    assert (tmp_path / "pruned" / "fairprune.json").exists()
