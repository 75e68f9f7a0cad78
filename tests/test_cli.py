"""The train command's caching, --force and engines, through carrydemo.cli.main."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import pytest

from carrydemo.cli import describe_stop, main
from tests.conftest import run_cli

TINY = ["--model", "mlp", "--seeds", "0-1", "--epochs", "3", "--eval-every", "1"]


def train(out, *extra) -> int:
    return main(
        ["train", *TINY, "--jobs", "1", "--device", "cpu", "--out", str(out), *extra]
    )


def stamp(out) -> int:
    """Changes whenever a run rewrites the results folder."""
    return (out / "metrics.json").stat().st_ino


def test_a_second_run_with_nothing_changed_does_no_work(tmp_path, caplog):
    out = tmp_path / "results"
    assert train(out) == 0
    before = stamp(out)
    with caplog.at_level(logging.INFO, logger="carrydemo"):
        assert train(out) == 0
    assert stamp(out) == before
    assert "is up to date" in caplog.text


def test_force_retrains(tmp_path):
    out = tmp_path / "results"
    assert train(out) == 0
    before = stamp(out)
    assert train(out, "--force") == 0
    assert stamp(out) != before


@pytest.mark.parametrize(
    "change, engine, kernel",
    [
        (["--lr", "2e-4"], "stacked", "c"),
        (["--engine", "plain"], "plain", None),
        (["--kernel", "tensor"], "stacked", "tensor"),
    ],
)
def test_a_changed_setting_engine_or_kernel_retrains(tmp_path, change, engine, kernel):
    out = tmp_path / "results"
    assert train(out, "--kernel", "c") == 0
    before = stamp(out)
    assert train(out, *change) == 0
    assert stamp(out) != before
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["engine"], manifest["kernel"]) == (engine, kernel)


def test_results_of_either_kernel_are_current_for_kernel_auto(tmp_path, caplog):
    out = tmp_path / "results"
    assert train(out, "--kernel", "tensor") == 0
    before = stamp(out)
    with caplog.at_level(logging.INFO, logger="carrydemo"):
        assert train(out) == 0  # --kernel auto, which would choose c here
    assert stamp(out) == before
    assert "is up to date" in caplog.text


def test_changed_training_code_retrains(tmp_path, monkeypatch):
    out = tmp_path / "results"
    assert train(out) == 0
    before = stamp(out)
    monkeypatch.setattr(
        "carrydemo.results.training_code_hash", lambda: "other training code"
    )
    assert train(out) == 0
    assert stamp(out) != before


def test_damaged_results_are_retrained(tmp_path):
    out = tmp_path / "results"
    assert train(out) == 0
    (out / "curves.json").write_text("{}")
    before = stamp(out)
    assert train(out) == 0
    assert stamp(out) != before


def test_the_engines_agree_and_checkpoints_are_removed(tmp_path):
    stacked, plain = tmp_path / "stacked", tmp_path / "plain"
    assert train(stacked) == 0
    assert train(plain, "--engine", "plain") == 0
    for out in (stacked, plain):
        assert not (out / ".checkpoints").exists() or not any(
            (out / ".checkpoints").iterdir()
        )
    first = json.loads((stacked / "metrics.json").read_text())["models"]["mlp"]
    second = json.loads((plain / "metrics.json").read_text())["models"]["mlp"]
    for a, b in zip(first["runs"], second["runs"], strict=True):
        assert a["final_train_loss"] == pytest.approx(b["final_train_loss"], abs=1e-5)
        assert a["epochs_run"] == b["epochs_run"]


def test_bad_jobs_get_one_line_and_status_2(tmp_path, capsys):
    assert train(tmp_path / "results", "--jobs", "-1") == 2
    assert "jobs=-1 is out of range" in capsys.readouterr().err


@pytest.mark.slow
def test_two_models_train_in_two_processes(tmp_path):
    out = tmp_path / "results"
    options = ["train", "--model", "both", "--seeds", "0-1", "--epochs", "2"]
    assert main([*options, "--jobs", "2", "--device", "cpu", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["processes"], manifest["threads"]) == (2, 1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["models"]) == ["mlp", "rnn"]


def test_the_progress_line_says_why_each_run_stopped(tmp_path, caplog):
    out = tmp_path / "results"
    with caplog.at_level(logging.INFO, logger="carrydemo"):
        assert train(out) == 0
        assert train(out, "--loss-threshold", "100", "--force") == 0
    lines = [line for line in caplog.text.splitlines() if "mlp seed 0:" in line]
    assert len(lines) == 2, caplog.text
    assert lines[0].endswith("after 3 epochs (ran all epochs)")
    assert lines[1].endswith("after 1 epochs (stopped: loss below 100)")


def test_a_diverged_run_says_what_its_loss_became():
    run = SimpleNamespace(stop_reason="non_finite", final_train_loss=math.nan)
    assert describe_stop(run, 1e-3) == "stopped: loss became nan"


def test_train_refuses_to_replace_a_folder_without_results(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("keep me")
    done = run_cli(
        "train", "--epochs", "1", "--seeds", "0", "--out", str(project), cwd=tmp_path
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "holds no carrydemo results" in done.stderr
    assert [p.name for p in project.iterdir()] == ["notes.txt"]
