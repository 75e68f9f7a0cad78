"""The stacked trainer against its oracle, the plain per-model loop."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import replace

import pytest
import torch

from carrydemo.config import TrainConfig
from carrydemo.data import article_splits
from carrydemo.kernels import compiler
from carrydemo.results import load_trained_model, write_results
from carrydemo.stacked import StackedRun, train_stacked
from carrydemo.train import train_plain

torch.set_num_threads(1)

# the stacked trainer's two ways of computing: the C kernel needs a compiler,
# which CI installs (there, a missing one fails the tests)
KERNELS = [
    pytest.param(
        "c",
        marks=pytest.mark.skipif(
            compiler() is None and not os.environ.get("CI"),
            reason="no C compiler for the kernel",
        ),
    ),
    "tensor",
]

# Largest weight difference allowed between a member and the plain loop after
# a few hundred Adam steps: float32 rounding differs (batched products,
# hand-written gradients), measured at 5e-8 after 315 steps.
WEIGHT_TOLERANCE = 1e-6
CURVE_TOLERANCE = 1e-5
# 24 examples a batch: batch size != sequence length (3), and 500 = 20*24 + 20
# leaves a smaller last batch.
PARITY = TrainConfig(seeds=(0, 1), epochs=15, batch_size=24, eval_every=5, device="cpu")


@pytest.fixture(scope="module")
def splits():
    return article_splits()


def assert_same_run(stacked, plain, tolerance=WEIGHT_TOLERANCE):
    assert (stacked.model, stacked.seed) == (plain.model, plain.seed)
    assert stacked.state.keys() == plain.state.keys()
    for key, value in plain.state.items():
        assert stacked.state[key].shape == value.shape, key
        difference = (stacked.state[key] - value).abs().max().item()
        assert difference <= tolerance, f"{key} differs by {difference:.2e}"
    assert stacked.epochs_run == plain.epochs_run
    assert stacked.stop_reason == plain.stop_reason
    assert stacked.final_train_loss == pytest.approx(plain.final_train_loss, abs=1e-5)
    assert stacked.test_accuracy == pytest.approx(plain.test_accuracy, abs=1e-9)
    assert stacked.curves["epoch"] == plain.curves["epoch"]
    for key in plain.curves:
        assert stacked.curves[key] == pytest.approx(
            plain.curves[key], abs=CURVE_TOLERANCE
        )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", ["rnn", "mlp"])
def test_each_member_matches_the_plain_loop(splits, name, kernel):
    stacked = train_stacked(name, PARITY.seeds, PARITY, splits, kernel=kernel)
    for run in stacked:
        assert_same_run(run, train_plain(name, run.seed, PARITY, splits))


# Shapes the article does not use, for the C kernel's blocking: batches of
# more than one block of 32 examples and of fewer than one vector of 8, rows
# wider than 32 columns, four and five digits.
@pytest.mark.parametrize(
    "name, batch_size, hidden_size, num_digits",
    [
        ("rnn", 40, 5, 3),
        ("rnn", 7, 33, 4),
        ("mlp", 72, 3, 5),
        ("mlp", 5, 36, 4),
    ],
)
def test_the_c_kernel_matches_the_plain_loop_at_other_shapes(
    name, batch_size, hidden_size, num_digits
):
    splits = article_splits(num_digits)
    config = replace(
        PARITY,
        epochs=3,
        eval_every=3,
        batch_size=batch_size,
        hidden_size=hidden_size,
        num_digits=num_digits,
    )
    stacked = train_stacked(name, config.seeds, config, splits, kernel="c")
    for run in stacked:
        assert_same_run(run, train_plain(name, run.seed, config, splits))


def test_each_member_takes_its_own_learning_rate(splits):
    config = replace(PARITY, epochs=8)
    stacked = train_stacked("rnn", (0, 1), config, splits, lrs=[3e-3, 1e-4])
    assert_same_run(stacked[0], train_plain("rnn", 0, replace(config, lr=3e-3), splits))
    assert_same_run(stacked[1], train_plain("rnn", 1, replace(config, lr=1e-4), splits))


def test_a_member_below_the_threshold_stops_and_the_others_go_on(splits):
    # a fast learner crosses the threshold within a few epochs, a slow one never
    config = replace(PARITY, epochs=12, loss_threshold=2.0)
    fast, slow = train_stacked("rnn", (0, 1), config, splits, lrs=[0.03, 1e-5])
    assert fast.stop_reason == "loss_threshold"
    assert fast.epochs_run < config.epochs
    assert fast.final_train_loss < config.loss_threshold
    assert (slow.stop_reason, slow.epochs_run) == ("epochs", config.epochs)
    # steps 300 times larger than at lr 1e-4 carry rounding differences further
    fast_plain = train_plain("rnn", 0, replace(config, lr=0.03), splits)
    assert_same_run(fast, fast_plain, tolerance=300 * WEIGHT_TOLERANCE)
    assert_same_run(slow, train_plain("rnn", 1, replace(config, lr=1e-5), splits))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", ["rnn", "mlp"])
def test_a_non_finite_member_is_stopped_and_reported_alone(
    splits, caplog, name, kernel
):
    config = replace(PARITY, epochs=6)
    run = StackedRun(name, [0, 1], [config.lr] * 2, config, splits, "cpu", kernel)
    run.stack.params[1, 0] = math.nan  # a weight of the first layer's first unit
    with caplog.at_level(logging.WARNING, logger="carrydemo.stacked"):
        run.train()
    healthy, broken = run.results()
    assert (broken.stop_reason, broken.epochs_run) == ("non_finite", 1)
    assert math.isnan(broken.final_train_loss)
    assert f"{name} seed 1 stopped at epoch 1: training loss nan" in caplog.text
    assert healthy.stop_reason == "epochs"
    assert_same_run(healthy, train_plain(name, 0, config, splits))


def test_the_same_seeds_give_bit_identical_weights(splits):
    config = replace(PARITY, epochs=4)
    first = train_stacked("rnn", (3, 4), config, splits)
    second = train_stacked("rnn", (3, 4), config, splits)
    for a, b in zip(first, second, strict=True):
        assert all(torch.equal(a.state[key], b.state[key]) for key in a.state)
        assert a.curves == b.curves


def test_a_resumed_run_equals_an_uninterrupted_one(splits, tmp_path):
    config = replace(PARITY, epochs=9)
    checkpoint = tmp_path / "run.pt"
    interrupted = StackedRun("rnn", [0, 1], [config.lr] * 2, config, splits, "cpu")
    interrupted.train(until_epoch=4)
    interrupted.save_checkpoint(checkpoint)
    resumed = train_stacked("rnn", (0, 1), config, splits, checkpoint_path=checkpoint)
    uninterrupted = train_stacked("rnn", (0, 1), config, splits)
    for a, b in zip(resumed, uninterrupted, strict=True):
        assert all(torch.equal(a.state[key], b.state[key]) for key in a.state)
        assert a.curves == b.curves
        assert a.epochs_run == b.epochs_run == config.epochs


def test_a_checkpoint_of_another_run_is_ignored(splits, tmp_path):
    config = replace(PARITY, epochs=3)
    checkpoint = tmp_path / "run.pt"
    other = StackedRun("rnn", [5], [config.lr], config, splits, "cpu")
    other.train(until_epoch=1)
    other.save_checkpoint(checkpoint)
    resumed = train_stacked("rnn", (0,), config, splits, checkpoint_path=checkpoint)
    assert_same_run(resumed[0], train_plain("rnn", 0, config, splits))


def test_results_of_the_stack_load_as_nn_modules(splits, tmp_path):
    config = replace(PARITY, models=("rnn",), epochs=2)
    runs = train_stacked("rnn", config.seeds, config, splits)
    write_results(tmp_path, config, {"rnn": runs}, {"rnn": 745}, {"threads": 1})
    model = load_trained_model(tmp_path, "rnn", seed=1)
    expected = runs[1].state
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key])


def test_mismatched_learning_rates_are_refused(splits):
    with pytest.raises(ValueError, match="2 learning rates for 3 seeds"):
        train_stacked("rnn", (0, 1, 2), PARITY, splits, lrs=[1e-3, 1e-4])
    with pytest.raises(ValueError, match="repeat"):
        train_stacked("rnn", (0, 0), PARITY, splits)
