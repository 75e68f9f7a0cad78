"""The plain training loop: it learns, it repeats itself, and it fails well."""

from __future__ import annotations

import dataclasses
import math
import signal

import pytest
import torch

from carrydemo import cli, train
from carrydemo.data import article_splits
from carrydemo.models import predict
from carrydemo.results import load_metrics, load_trained_model, load_weights
from carrydemo.train import batch_slices, seeded_model, train_plain
from tests.conftest import TINY

SPLITS = article_splits()


def test_a_short_run_lowers_the_training_loss():
    config = dataclasses.replace(TINY, epochs=15, eval_every=5, lr=1e-2)
    result = train_plain("rnn", 0, config, SPLITS)
    losses = result.curves["train_loss"]
    assert result.curves["epoch"] == [0, 5, 10, 15]
    assert losses[-1] < 0.8 * losses[0]
    assert result.epochs_run == 15 and result.stop_reason == "epochs"


@pytest.mark.parametrize("name", ["mlp", "rnn"])
def test_the_same_seed_gives_bit_identical_weights(name):
    first = train_plain(name, 3, TINY, SPLITS)
    torch.manual_seed(12345)  # the global generator must not matter
    second = train_plain(name, 3, TINY, SPLITS)
    assert first.state.keys() == second.state.keys()
    for key in first.state:
        assert torch.equal(first.state[key], second.state[key]), key
    assert first.curves == second.curves
    other = train_plain(name, 4, TINY, SPLITS)
    assert not torch.equal(first.state["output.bias"], other.state["output.bias"])


def test_initial_weights_depend_on_the_seed_alone():
    torch.manual_seed(1)
    first = seeded_model("rnn", 5).state_dict()
    torch.manual_seed(2)
    second = seeded_model("rnn", 5).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_saved_weights_reload_and_predict_the_same(tiny_results):
    metrics = load_metrics(tiny_results)
    for name in ("mlp", "rnn"):
        rerun = train_plain(name, metrics["models"][name]["seed"], TINY, SPLITS)
        reloaded = load_trained_model(tiny_results, name)
        for key, tensor in load_weights(tiny_results, name, 0).items():
            assert torch.equal(tensor, rerun.state[key]), key
        fresh = seeded_model(name, 0)
        fresh.load_state_dict(rerun.state)
        assert torch.equal(
            predict(reloaded, SPLITS.test.features),
            predict(fresh.eval(), SPLITS.test.features),
        )


def test_batch_slices_cover_every_example_once():
    slices = batch_slices(70, 32)
    assert [(s.start, s.stop) for s in slices] == [(0, 32), (32, 64), (64, 96)]
    assert sum(len(range(70)[s]) for s in slices) == 70


def test_a_diverged_member_is_reported_and_the_others_kept(
    tmp_path, monkeypatch, caplog
):
    # seed 1 of the rnn produces a NaN loss at its second epoch
    real_seeded_model, real_run_epoch = train.seeded_model, train.run_epoch
    epochs_seen = {}

    def seeded(name, seed, *args, **kwargs):
        model = real_seeded_model(name, seed, *args, **kwargs)
        model.diverges = name == "rnn" and seed == 1
        return model

    def run_epoch(model, optimizer, train_split, order, batch_size):
        loss = real_run_epoch(model, optimizer, train_split, order, batch_size)
        if not model.diverges:
            return loss
        epochs_seen[id(model)] = epochs_seen.get(id(model), 0) + 1
        return math.nan if epochs_seen[id(model)] >= 2 else loss

    monkeypatch.setattr(train, "seeded_model", seeded)
    monkeypatch.setattr(train, "run_epoch", run_epoch)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    out = tmp_path / "results"
    arguments = ["--epochs", "3", "--seeds", "0-2", "--engine", "plain", "--jobs", "1"]
    status = cli.main(["train", *arguments, "--out", str(out)])

    assert status == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "rnn seed 1: training loss became nan at epoch 2; "
        "kept as a failed run (stop_reason non_finite), the others go on"
    ]
    runs = {run["seed"]: run for run in load_metrics(out)["models"]["rnn"]["runs"]}
    assert runs[1]["stop_reason"] == "non_finite"
    assert runs[1]["final_train_loss"] is None
    assert runs[1]["epochs_run"] == 2
    assert [runs[s]["stop_reason"] for s in (0, 2)] == ["epochs", "epochs"]
    assert all(math.isfinite(runs[s]["final_train_loss"]) for s in (0, 2))
    assert load_metrics(out)["models"]["mlp"]["test_accuracy_summary"]["n"] == 3
