"""Which checkpoint ``--ckpt`` means: a file, a stage directory, a run directory."""

from __future__ import annotations

import pytest

from explainable_ser.config import ConfigError
from explainable_ser.training.runs import find_checkpoint, resolve_ckpt_arg, stage_order


def make_run(root, stages, files):
    """A run directory whose config.yaml lists ``stages`` in order, with the given checkpoint files."""
    root.mkdir(parents=True, exist_ok=True)
    names = "".join(f"    - name: {s}\n" for s in stages)
    (root / "config.yaml").write_text(f"name: x\ntraining:\n  stages:\n{names}")
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"ckpt")
    return root


def test_a_file_is_itself_and_a_stage_directory_its_final_checkpoint(tmp_path):
    run = make_run(tmp_path / "run", ["stage1", "stage2"], ["stage2/final.ckpt", "stage2/last.ckpt"])
    assert find_checkpoint(run / "stage2" / "last.ckpt") == run / "stage2" / "last.ckpt"
    assert find_checkpoint(run / "stage2") == run / "stage2" / "final.ckpt"


def test_a_run_directory_means_the_last_stage_in_training_order(tmp_path):
    # by name "s10" sorts before "s2"; the config says s10 trains last
    run = make_run(tmp_path / "run", ["s2", "s10"], ["s2/final.ckpt", "s10/final.ckpt"])
    assert stage_order(run) == ["s2", "s10"]
    assert find_checkpoint(run) == run / "s10" / "final.ckpt"
    (run / "config.yaml").unlink()  # no config: stage directories by name
    assert find_checkpoint(run) == run / "s2" / "final.ckpt"


def test_a_stage_not_started_is_passed_over_and_an_unfinished_one_refused(tmp_path):
    run = make_run(tmp_path / "run", ["stage1", "stage2"], ["stage1/final.ckpt"])
    assert find_checkpoint(run) == run / "stage1" / "final.ckpt"  # stage2 never ran
    (run / "stage2").mkdir()
    (run / "stage2" / "last.ckpt").write_bytes(b"ckpt")
    with pytest.raises(ConfigError, match="did not finish.*ckpt_path=last.*stage2/last.ckpt"):
        find_checkpoint(run)


def test_a_directory_without_checkpoints_says_what_it_found(tmp_path):
    run = make_run(tmp_path / "run", ["stage1"], ["notes/old.ckpt.bak"])
    with pytest.raises(ConfigError, match="no .ckpt file at all"):
        find_checkpoint(run)
    with pytest.raises(ConfigError, match="checkpoint not found: .*nope"):
        find_checkpoint(tmp_path / "nope")
    deep = make_run(tmp_path / "deep", ["stage1"], ["a/b/x.ckpt"])
    with pytest.raises(ConfigError, match="found a/b/x.ckpt"):
        find_checkpoint(deep)


def test_the_command_line_says_which_file_a_directory_meant(tmp_path, capsys):
    run = make_run(tmp_path / "run", ["stage1", "stage2"], ["stage1/final.ckpt", "stage2/final.ckpt"])
    assert resolve_ckpt_arg(str(run)) == str(run / "stage2" / "final.ckpt")
    assert f"checkpoint: {run / 'stage2' / 'final.ckpt'} (from {run})" in capsys.readouterr().err
    assert resolve_ckpt_arg(str(run / "stage1" / "final.ckpt")) == str(run / "stage1" / "final.ckpt")
    assert capsys.readouterr().err == ""  # a file needs no word
