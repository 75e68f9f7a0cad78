"""The results folder: written whole, read back checked, damage named."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from carrydemo import results
from carrydemo.results import (
    SCHEMA_VERSION,
    TRAIN_COMMAND,
    ResultsError,
    content_hash,
    dumps,
    load_curves,
    load_metrics,
    load_trained_model,
    load_weights,
    publish_directory,
    remove_stale_staging,
    results_lock,
    summarize,
    write_json,
)
from tests.conftest import TINY, cli_env, write_tiny_results


@pytest.fixture
def copied(tiny_results, tmp_path) -> Path:
    target = tmp_path / "results"
    shutil.copytree(tiny_results, target)
    return target


def test_metrics_hold_both_models_and_every_seed(tiny_results):
    metrics = load_metrics(tiny_results, check_code=True)
    assert metrics["schema_version"] == SCHEMA_VERSION
    assert metrics["config"] == TINY.to_dict()
    assert metrics["models"]["mlp"]["parameters"] == 770
    assert metrics["models"]["rnn"]["parameters"] == 745
    for model in ("mlp", "rnn"):
        entry = metrics["models"][model]
        assert [run["seed"] for run in entry["runs"]] == [0, 1]
        assert entry["seed"] == 0
        assert entry["test_accuracy"] == entry["runs"][0]["test_accuracy"]
        assert entry["test_accuracy_summary"]["n"] == 2
    assert sorted(metrics["files"]) == [
        "curves.json",
        "weights/mlp-seed0.safetensors",
        "weights/mlp-seed1.safetensors",
        "weights/rnn-seed0.safetensors",
        "weights/rnn-seed1.safetensors",
    ]


def test_curves_are_keyed_by_model_and_seed(tiny_results):
    curves = load_curves(tiny_results)
    assert sorted(curves) == ["mlp", "rnn"]
    assert curves["rnn"]["1"]["epoch"] == [0, 1, 2, 3]
    assert len(curves["rnn"]["1"]["validation_accuracy"]) == 4


def test_summarize_uses_the_sample_standard_deviation():
    summary = summarize([0.5, 0.75, 1.0])
    assert summary == {
        "n": 3,
        "mean": 0.75,
        "std": 0.25,
        "median": 0.75,
        "min": 0.5,
        "max": 1.0,
    }
    assert summarize([0.3])["std"] == 0.0


def test_write_json_sorts_keys_and_leaves_no_temporary_files(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [1.5, None]})
    assert (tmp_path / "a.json").read_text() == dumps({"a": [1.5, None], "b": 1})
    assert list(tmp_path.iterdir()) == [tmp_path / "a.json"]
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})


def result_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "manifest.json"
    }


def test_a_new_run_keeps_other_results_files_and_replaces_its_own(copied):
    (copied / "study.json").write_text('{"kept": true}\n')
    before = result_bytes(copied)
    write_tiny_results(copied)
    assert (copied / "study.json").read_text() == '{"kept": true}\n'
    # same seeds and threads, same bytes: weights, curves and metrics alike
    assert result_bytes(copied) == before
    assert sorted(p.name for p in copied.parent.iterdir()) == ["results"]


def assert_names_file_and_command(error: ResultsError, file: Path):
    message = str(error)
    assert str(file) in message and TRAIN_COMMAND in message
    assert "\n" not in message


def test_missing_results_name_the_command(tmp_path):
    with pytest.raises(ResultsError) as error:
        load_metrics(tmp_path / "nothing")
    assert_names_file_and_command(error.value, tmp_path / "nothing" / "metrics.json")


@pytest.mark.parametrize("keep", [0, 1, 100, -2])
def test_a_truncated_metrics_file_is_detected(copied, keep):
    path = copied / "metrics.json"
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ResultsError, match="damaged|another version") as error:
        load_metrics(copied)
    assert_names_file_and_command(error.value, path)


def edit_metrics(directory: Path, change) -> Path:
    path = directory / "metrics.json"
    metrics = json.loads(path.read_text())
    change(metrics)
    path.write_text(json.dumps(metrics))
    return path


def test_a_hand_edited_number_is_detected(copied):
    path = edit_metrics(
        copied, lambda m: m["models"]["rnn"].update(test_accuracy=0.7625)
    )
    with pytest.raises(ResultsError, match="edited or damaged") as error:
        load_metrics(copied)
    assert_names_file_and_command(error.value, path)


def test_results_of_another_schema_are_detected(copied):
    def older(metrics):
        metrics["schema_version"] = 1
        metrics["content_hash"] = content_hash(metrics)

    path = edit_metrics(copied, older)
    with pytest.raises(ResultsError, match="another version") as error:
        load_metrics(copied)
    assert_names_file_and_command(error.value, path)


def test_results_of_other_training_code_are_detected_when_asked(copied):
    def other_code(metrics):
        metrics["code_hash"] = "0" * 16
        metrics["content_hash"] = content_hash(metrics)

    edit_metrics(copied, other_code)
    load_metrics(copied)  # figures may still be drawn from them
    with pytest.raises(ResultsError, match="other training code"):
        load_metrics(copied, check_code=True)


@pytest.mark.parametrize("damage", ["missing", "flipped", "replaced"])
def test_a_changed_weights_file_is_detected(copied, damage):
    path = copied / "weights" / "rnn-seed1.safetensors"
    if damage == "missing":
        path.unlink()
    elif damage == "flipped":
        payload = bytearray(path.read_bytes())
        payload[-1] ^= 0xFF
        path.write_bytes(bytes(payload))
    else:
        shutil.copy(copied / "weights" / "rnn-seed0.safetensors", path)
    with pytest.raises(ResultsError, match="missing or does not match") as error:
        load_metrics(copied)
    assert_names_file_and_command(error.value, path)


def replace_weights_and_rehash(directory: Path, tensors: dict) -> Path:
    path = directory / "weights" / "rnn-seed0.safetensors"
    save_file(tensors, path)

    def rehash(metrics):
        metrics["files"]["weights/rnn-seed0.safetensors"] = results.file_sha256(path)
        metrics["content_hash"] = content_hash(metrics)

    edit_metrics(directory, rehash)
    return path


def test_weights_with_other_keys_are_named(copied):
    path = replace_weights_and_rehash(copied, {"rnn.weight": torch.zeros(3, 3)})
    with pytest.raises(ResultsError, match="does not fit the rnn model") as error:
        load_trained_model(copied, "rnn", 0)
    assert_names_file_and_command(error.value, path)


def test_weights_of_the_wrong_shape_are_named(copied):
    wrong = {
        name: torch.zeros(*(size + 1 for size in tensor.shape))
        for name, tensor in load_weights(copied, "rnn", 0).items()
    }
    path = replace_weights_and_rehash(copied, wrong)
    with pytest.raises(ResultsError, match="size mismatch") as error:
        load_trained_model(copied, "rnn", 0)
    assert_names_file_and_command(error.value, path)


class Exploit:
    """Unpickling this would create a file: weights must never be unpickled."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_weights_never_load_through_pickle(copied, tmp_path):
    touched = tmp_path / "unpickled"
    path = copied / "weights" / "rnn-seed0.safetensors"
    path.write_bytes(pickle.dumps({"rnn.weight_ih_l0": Exploit(touched)}))
    with pytest.raises(ResultsError) as error:
        load_weights(copied, "rnn", 0)
    assert_names_file_and_command(error.value, path)
    with pytest.raises(ResultsError):
        load_trained_model(copied, "rnn", 0)
    assert not touched.exists()


def test_publish_swaps_folders_and_removes_the_old_one(tmp_path):
    old, new = tmp_path / "results", tmp_path / ".results.partial-x"
    old.mkdir()
    (old / "metrics.json").write_text("old")
    (old / "bench.json").write_text("bench")
    new.mkdir()
    (new / "metrics.json").write_text("new")
    publish_directory(new, old)
    assert (old / "metrics.json").read_text() == "new"
    assert (old / "bench.json").read_text() == "bench"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_stale_staging_folders_are_removed(tmp_path):
    out = tmp_path / "results"
    for name in (".results.partial-abc", ".results.partial-def", "results.previous"):
        (tmp_path / name / "weights").mkdir(parents=True)
    (tmp_path / ".other.partial-x").mkdir()
    removed = remove_stale_staging(out)
    assert len(removed) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-x"]


SECOND_HOLDER = """
import sys
from carrydemo.results import ResultsError, results_lock
try:
    with results_lock(sys.argv[1]):
        sys.exit(0)
except ResultsError:
    sys.exit(3)
"""


def test_the_lock_refuses_a_second_holder_at_once(tmp_path):
    out = tmp_path / "build" / "results"
    with results_lock(out):
        assert (tmp_path / "build" / ".carrydemo.lock").exists()
        second = subprocess.run(
            [sys.executable, "-c", SECOND_HOLDER, str(out)],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 3, second.stderr
    with results_lock(out):
        pass


def damage(folder: Path, kind: str) -> Path:
    """Damage a results folder one way; return the file a message must name."""
    metrics = folder / "metrics.json"
    if kind == "truncated":
        metrics.write_bytes(metrics.read_bytes()[:200])
    elif kind == "edited":
        edit_metrics(folder, lambda m: m["models"]["mlp"].update(test_accuracy=0.9))
    elif kind == "old-schema":
        metrics.write_text('{"schema_version": 1, "models": {}}')
    else:
        weights = folder / "weights" / "mlp-seed0.safetensors"
        shutil.copy(folder / "weights" / "mlp-seed1.safetensors", weights)
        return weights
    return metrics


@pytest.mark.parametrize("kind", ["truncated", "edited", "old-schema", "weights"])
def test_the_docs_build_stops_on_damaged_results(copied, monkeypatch, kind):
    from mkdocs.exceptions import PluginError

    from carrydemo.site import load_build

    named = damage(copied, kind)
    monkeypatch.setenv("CARRYDEMO_RESULTS", str(copied))
    with pytest.raises(PluginError) as error:
        load_build()
    message = str(error.value)
    assert str(named) in message and TRAIN_COMMAND in message


def test_exchange_directories_swaps_two_folders_in_one_step(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "name.txt").write_text(folder.name)
    assert results.exchange_directories(first, second)
    assert (first / "name.txt").read_text() == "second"
    assert (second / "name.txt").read_text() == "first"
