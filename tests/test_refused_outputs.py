"""Output directories lose nothing: no silent replacement, one writer at a time, atomic swaps, cleaned leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import fairprune as fp
from fairprune.cli import main as cli_main
from fairprune.core.contract.errors import OutputError
from fairprune.core.io import outputs
from fairprune.testing import snapshot, tiny_char_tokenizer, tiny_model

FAST = {"evaluators": ["activation_bias", "parameters"]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), path)
    return path


@pytest.fixture
def run_dir(tmp_path):
    """A directory that looks like a finished run, with a file the user put there."""
    out = tmp_path / "work" / "run"
    (out / "bias").mkdir(parents=True)
    (out / "metrics.json").write_text('{"pruning": {}}')
    (out / "plan.json").write_text('{"removed": {}}')
    (out / "bias" / "bias_report.json").write_text("{}")
    (out / "my-notes.txt").write_text("mine")
    return out


def write_config(tmp_path, model_dir, out):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": {"source": str(model_dir)}, "bias": {"batch_size": 8},
                                  "pruning": {"budget": {"neurons": 4}}, "evaluation": FAST,
                                  "output": {"dir": str(out)}}))
    return config


def refused(capsys, argv):
    """Run the CLI; return (exit code, the one stderr line)."""
    capsys.readouterr()
    code = cli_main(argv)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return code, err


def test_prune_into_an_existing_run_directory_needs_overwrite(run_dir, tmp_path, capsys):
    before = snapshot(tmp_path)
    # the model does not exist: the output is checked before anything is loaded
    code, err = refused(capsys, ["prune", "--model", str(tmp_path / "no-model"), "--plan", str(run_dir / "plan.json"),
                                 "--out", str(run_dir)])
    assert code == 1 and err.startswith("error: --out:")
    assert "exists and is not empty" in err and "--overwrite" in err
    assert snapshot(tmp_path) == before


def test_analyze_into_an_existing_directory_needs_overwrite(run_dir, tmp_path, capsys):
    before = snapshot(tmp_path)
    code, err = refused(capsys, ["analyze", "--model", str(tmp_path / "no-model"), "--out", str(run_dir)])
    assert code == 1 and "--out:" in err and "exists and is not empty" in err and "--overwrite" in err
    assert snapshot(tmp_path) == before


def test_evaluate_out_file_is_not_replaced_without_overwrite(tmp_path, capsys):
    (tmp_path / "pruned").mkdir()
    (tmp_path / "results.json").write_text("earlier results")
    before = snapshot(tmp_path)
    code, err = refused(capsys, ["evaluate", "--base", str(tmp_path / "no-model"), "--pruned", str(tmp_path / "pruned"),
                                 "--out", str(tmp_path / "results.json")])
    assert code == 1 and "--out:" in err and "exists" in err and "--overwrite" in err
    assert snapshot(tmp_path) == before


def test_run_into_an_existing_directory_names_the_setting_and_the_flag(run_dir, model_dir, tmp_path, capsys):
    config = write_config(tmp_path, model_dir, run_dir)
    before = snapshot(tmp_path)
    code, err = refused(capsys, ["run", str(config), "--quiet"])
    assert code == 1 and "output.dir:" in err and "output.overwrite: true" in err and "--overwrite" in err
    assert snapshot(tmp_path) == before


def test_run_with_overwrite_replaces_the_directory_in_one_step(run_dir, model_dir, tmp_path, capsys):
    config = write_config(tmp_path, model_dir, run_dir)
    assert cli_main(["run", str(config), "--quiet", "--overwrite"]) == 0
    assert not (run_dir / "my-notes.txt").exists() and (run_dir / "fairprune.json").exists()
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["run"], "no lock, staging or old copy is left"


@pytest.mark.parametrize("kind", ["file", "parent_file"])
def test_output_path_that_is_or_lies_in_a_file_is_refused_before_loading(kind, model_dir, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" if kind == "file" else tmp_path / "taken" / "run"
    config = write_config(tmp_path, model_dir, out)
    before = snapshot(tmp_path)
    code, err = refused(capsys, ["run", str(config), "--quiet"])
    assert code == 1 and "output.dir:" in err and "is a file" in err
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_parent_is_refused_before_loading(model_dir, tmp_path, capsys):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    config = write_config(tmp_path, model_dir, tmp_path / "ro" / "run")
    try:
        code, err = refused(capsys, ["run", str(config), "--quiet"])
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert code == 1 and "output.dir:" in err and ("not writable" in err or "cannot write" in err)


HOLD = textwrap.dedent("""
    import sys, time
    from fairprune.core.io.outputs import claim_output_dir
    claim_output_dir(sys.argv[1], overwrite=False)
    print("claimed", flush=True)
    time.sleep(60)
""")


def test_a_directory_being_written_is_refused_then_a_dead_writers_lock_is_taken_over(model_dir, tmp_path, capsys,
                                                                                     caplog):
    out = tmp_path / "runs" / "shared"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        config = write_config(tmp_path, model_dir, out)
        before = snapshot(tmp_path)
        code, err = refused(capsys, ["run", str(config), "--quiet"])
        assert code == 1 and "being written by another fairprune process" in err and f"pid {holder.pid}" in err
        assert snapshot(tmp_path) == before
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without cleaning up: its lock file stays
        holder.wait()
    assert outputs.lock_path(out).read_text().strip() == str(holder.pid)
    with caplog.at_level("WARNING", logger="fairprune.core.io.outputs"):
        assert cli_main(["run", str(config), "--quiet"]) == 0
    assert f"left by process {holder.pid}, which is no longer running" in caplog.text
    assert (out / "metrics.json").exists() and not outputs.lock_path(out).exists()


def test_another_thread_cannot_claim_a_claimed_directory(tmp_path):
    target = outputs.claim_output_dir(tmp_path / "out", overwrite=False)
    errors = []

    def other():
        try:
            outputs.claim_output_dir(target, overwrite=False)
        except OutputError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    outputs.release_output_dir(target)
    assert errors and "another thread" in errors[0]
    assert not outputs.lock_path(target).exists()


def test_the_old_copy_stays_in_place_until_the_new_one_is_complete(run_dir):
    before = snapshot(run_dir)
    with outputs.atomic_directory(run_dir, overwrite=True) as staging:
        staging.mkdir()
        (staging / "new.txt").write_text("new")
        assert snapshot(run_dir) == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["new.txt"]


KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from fairprune.core.io import outputs
    outputs._exchange = lambda a, b: False  # the two-rename fallback, killed between its renames
    rename = Path.rename
    def rename_then_die(self, target):
        result = rename(self, target)
        if ".old-" in str(target):
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    Path.rename = rename_then_die
    with outputs.atomic_directory(sys.argv[1], overwrite=True) as staging:
        staging.mkdir()
        (staging / "half.bin").write_bytes(b"x" * 1000)
""")


def test_a_save_killed_between_its_renames_is_repaired_by_the_next_write(run_dir, caplog):
    before = snapshot(run_dir)
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(run_dir)], check=False)
    assert killed.returncode == -signal.SIGKILL
    left = sorted(p.name for p in run_dir.parent.iterdir())
    assert "run" not in left and any(".run.old-" in n for n in left) and any(".run.tmp-" in n for n in left)
    with caplog.at_level("WARNING", logger="fairprune.core.io.outputs"):
        with outputs.atomic_directory(run_dir.parent / "other") as staging:
            staging.mkdir()
    assert snapshot(run_dir) == before, "the old copy is back in place"
    assert sorted(p.name for p in run_dir.parent.iterdir()) == [".run.lock", "other", "run"]
    assert "restored" in caplog.text and "interrupted save" in caplog.text


def test_leftovers_of_a_running_save_are_left_alone(tmp_path):
    live = tmp_path / f".busy.tmp-{os.getppid()}-abc"
    live.mkdir()
    with outputs.atomic_directory(tmp_path / "other") as staging:
        staging.mkdir()
    assert live.exists()


def test_demo_into_a_directory_the_user_names_needs_overwrite(run_dir, tmp_path, capsys):
    before = snapshot(tmp_path)
    code, err = refused(capsys, ["demo", "--out", str(run_dir), "--quiet"])
    assert code == 1 and "output.dir:" in err and "exists and is not empty" in err and "--overwrite" in err
    assert snapshot(tmp_path) == before


def test_plot_into_an_existing_file_needs_overwrite(tmp_path, capsys):
    (tmp_path / "figure.png").write_bytes(b"an earlier figure")
    before = snapshot(tmp_path)
    code, err = refused(capsys, ["plot", "profile", str(tmp_path / "no-run"), "--out", str(tmp_path / "figure.png")])
    assert code == 1 and "--out:" in err and "exists" in err and "--overwrite" in err
    assert snapshot(tmp_path) == before


def test_two_runs_on_one_directory_one_writes_the_other_is_refused(model_dir, tmp_path):
    out = tmp_path / "shared"
    config = write_config(tmp_path, model_dir, out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-m", "fairprune", "run", str(config), "--quiet"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    err = next(err for code, err in results if code == 1).strip().splitlines()[-1]
    assert "being written by another fairprune process" in err or "exists and is not empty" in err
    assert (out / "metrics.json").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "shared"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc, where nobody can create files")
def test_a_parent_nobody_can_write_is_refused_before_loading(model_dir, tmp_path, capsys):
    config = write_config(tmp_path, model_dir, "/proc/fairprune-test-out")
    before = snapshot(tmp_path)
    code, err = refused(capsys, ["run", str(config), "--quiet"])
    assert code == 1 and err.startswith("error: output.dir: ") and "/proc" in err
    assert "cannot write" in err or "not writable" in err or "cannot create" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("given", ["", ".", "..", "~/"])
def test_the_current_directory_its_parents_and_home_are_never_an_output(given, tmp_path, model_dir, monkeypatch,
                                                                        capsys):
    work = tmp_path / "project" / "code"
    work.mkdir(parents=True)
    (work / "my_code.py").write_text("mine")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    config = write_config(tmp_path, model_dir, "unused")
    code, err = refused(capsys, ["run", str(config), "--set", f"output.dir={given}", "--overwrite"])
    what = {"": "the current directory", ".": "the current directory", "..": "a directory that holds the current one",
            "~/": "your home directory"}[given]
    assert code != 0 and err.startswith("error: output.dir: ") and what in err, err
    assert (work / "my_code.py").read_text() == "mine"


@pytest.mark.parametrize("command", ["run", "check"])
def test_overwrite_never_replaces_a_directory_fairprune_did_not_write(command, tmp_path, model_dir, capsys):
    # the example configs turn overwrite on, so output.dir pointed at any other directory must not delete it
    theirs = tmp_path / "someone" / "lib"
    theirs.mkdir(parents=True)
    (theirs / "libfoo.so").write_text("theirs")
    config = write_config(tmp_path, model_dir, str(theirs))
    before = snapshot(tmp_path)
    extra = ["--check"] if command == "check" else ["--quiet"]
    code, err = refused(capsys, ["run", str(config), "--overwrite", *extra])
    assert code == 1 and err.startswith(f"error: output.dir: {theirs} holds files fairprune did not write"), err
    assert "\n" not in err.strip() and snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["prune", "export", "run"])
def test_an_output_that_is_or_holds_its_own_input_is_refused(command, model_dir, run_dir, tmp_path, capsys):
    # with --overwrite each would replace, whole, the directory it reads from
    source = tmp_path / "model"
    fp.save_pretrained(fp.load_model(str(model_dir))[0], tiny_char_tokenizer(), source)
    if command == "prune":
        args = ["prune", "--model", str(source), "--plan", str(run_dir / "plan.json"), "--out", str(source)]
    elif command == "export":
        args = ["export", str(source), str(source)]
    else:  # the output directory holds the model it loads
        args = ["run", str(write_config(tmp_path, source, str(tmp_path))), "--quiet"]
    before = snapshot(tmp_path)
    code, err = refused(capsys, [*args, "--overwrite"])
    assert code == 1 and "is where the input" in err and "\n" not in err.strip(), err
    assert snapshot(tmp_path) == before


def test_a_bundled_models_name_is_not_read_as_the_input_directory(tmp_path, monkeypatch, capsys):
    # model.source smollm2-135m loads the bundled model even where a directory of that name exists
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m").mkdir()
    (tmp_path / "smollm2-135m" / "plan.json").write_text("{}")  # an earlier run's output
    demo = os.path.join(os.path.dirname(__file__), "..", "examples", "fair-smollm2.yaml")
    assert cli_main(["run", demo, "--check", "--set", "output.dir=smollm2-135m", "--overwrite"]) == 0
    assert "(its contents would be replaced)" in capsys.readouterr().out
