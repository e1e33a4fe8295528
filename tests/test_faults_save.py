"""A save killed at any point, or one that runs out of disk, leaves the previous output byte-identical, ends in
one line (disk full) and the next run succeeds; driven through the real CLI with ``fairprune.testing.faults``.
"""

from __future__ import annotations

import resource
from contextlib import contextmanager

import pytest
import yaml

from fairprune.core.contract.errors import OutputError
from fairprune.core.io.outputs import atomic_directory, atomic_file, disk_full_reason
from fairprune.testing import snapshot, tiny_model, tiny_tokenizer
from fairprune.testing.faults import (
    KillPoint,
    check_disk_full_save,
    check_killed_save,
    error_lines,
    leftovers,
    run_fairprune,
)
from fairprune.testing.runs import TINY_PAIRS


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory):
    """A tiny model, a config writing ``run/`` and one complete run already there (the previous output)."""
    from fairprune.core.run.pipeline import run

    root = tmp_path_factory.mktemp("faults")
    tiny_model("llama").save_pretrained(root / "source")
    tiny_tokenizer().save_pretrained(root / "source")
    (root / "pairs.yaml").write_text(yaml.safe_dump({"axis": "race", "pairs": [list(p) for p in TINY_PAIRS]}))
    config = {"model": {"source": str(root / "source")}, "bias": {"axes": [], "prompts": str(root / "pairs.yaml")},
              "pruning": {"budget": {"neurons": 8}}, "evaluation": {"evaluators": ["activation_bias", "parameters"]},
              "output": {"dir": str(root / "run"), "overwrite": True}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    run(config, progress=False)
    return root


def test_a_run_killed_anywhere_in_its_save_leaves_the_previous_output_and_the_next_run_succeeds(previous_run):
    args, output = ["run", str(previous_run / "config.yaml")], previous_run / "run"
    # after 0 and 3 complete files (weights and tokenizer are written by native code between them), before and
    # after the new directory is swapped in; the last check also runs again and asserts nothing is left over
    for point in (KillPoint(writes=0), KillPoint(writes=3), KillPoint(step="before-swap")):
        before = snapshot(output)
        killed = run_fairprune(args, env=point.env())
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
        assert snapshot(output) == before, point
    check_killed_save(args, output, KillPoint(step="after-swap"))


def test_a_run_onto_a_full_disk_is_one_line_naming_the_weights_and_changes_nothing(previous_run):
    output = previous_run / "run"
    assert (output / "model.safetensors").stat().st_size > 60_000
    line = check_disk_full_save(["run", str(previous_run / "config.yaml")], output, limit_bytes=60_000)
    assert line.startswith("error: output.dir: file too large") and "model.safetensors" in line
    assert f"the previous {output.absolute()} is unchanged" in line


def test_the_report_and_a_plot_onto_a_full_disk_keep_their_previous_files(previous_run, tmp_path):
    output = previous_run / "run"
    assert (output / "report.html").stat().st_size > 20_000
    line = check_disk_full_save(["report", str(output), "--no-models"], output, limit_bytes=20_000)
    assert "report.html" in line
    picture = tmp_path / "bias.png"
    assert run_fairprune(["plot", "profile", str(output), "--out", str(picture)]).returncode == 0
    before = picture.read_bytes()
    full = run_fairprune(["plot", "profile", str(output), "--out", str(picture), "--overwrite"],
                         file_size_limit=len(before) // 3)
    assert full.returncode == 1 and len(error_lines(full)) == 1 and str(picture) in error_lines(full)[0]
    assert picture.read_bytes() == before and not leftovers(tmp_path)


@contextmanager
def file_size_limit(n: int):
    """Limit this process's files to ``n`` bytes (soft limit only) for the body of the ``with``: writes past it fail
    with EFBIG. Restored before pytest writes anything (its own output may be a file larger than ``n``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_tokenizer_saved_onto_a_full_disk_is_one_line(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "plan.json").write_text("previous")  # a previous output: overwrite replaces only those
    before = snapshot(tmp_path)
    tokenizer = tiny_tokenizer()
    with pytest.raises(OutputError) as info, atomic_directory(target, overwrite=True) as staging:
        staging.mkdir()
        with file_size_limit(1000):  # tokenizer.json is ~3.6 kB; the tokenizers library writes it natively
            tokenizer.save_pretrained(staging)
    assert "file too large" in str(info.value) and "while writing" in str(info.value), str(info.value)
    assert f"while writing into {target};" in str(info.value)  # the tokenizers library names no file
    assert "\n" not in str(info.value) and snapshot(tmp_path) == before


def test_a_text_file_onto_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old")
    with (pytest.raises(OutputError, match=r"file too large .* while writing .*report\.md; nothing was replaced"),
          atomic_file(path) as staging):
        with file_size_limit(100):
            staging.write_text("x" * 1000)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


@pytest.mark.parametrize(("error", "found"), [
    (OSError(28, "No space left on device"), "disk full"),
    (RuntimeError("Error while serializing: I/O error: File too large (os error 27)"), "too large"),
    (Exception("Disk quota exceeded (os error 122)"), "quota"),
    (OSError(13, "Permission denied"), None),
    (RuntimeError("os error 2"), None),
])
def test_disk_full_errors_are_recognised_by_errno_or_by_the_native_libraries_words(error, found):
    reason = disk_full_reason(error)
    assert (reason is None) if found is None else (found in reason)
    wrapped = ValueError("while saving")
    wrapped.__cause__ = error
    assert disk_full_reason(wrapped) == reason
