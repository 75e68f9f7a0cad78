"""The article's training framework, as the plain per-model PyTorch loop.

Epochs outside, shuffled mini-batches inside (forward, backprop, Adam step);
the learning curves are measured every ``eval_every`` epochs; training stops
early once an epoch's mean training loss falls below ``loss_threshold``.

This loop is the reference: the stacked trainer must give the same weights
for the same initial weights and batch order.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from carrydemo.config import ConfigError, TrainConfig
from carrydemo.data import Examples, Splits
from carrydemo.models import build_model, exact_match_accuracy

log = logging.getLogger(__name__)

# Batch order comes from a generator of its own, offset from the seed that
# initialises the weights, so the two streams never coincide.
SHUFFLE_SEED_OFFSET = 1_000_003
PROGRESS_INTERVAL_S = 5.0
CURVE_KEYS = ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy")


def resolve_device(name: str) -> torch.device:
    """Turn auto|cpu|cuda into a device, refusing cuda where there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' asked for, but PyTorch sees no CUDA GPU; use --device cpu"
        )
    return torch.device(name)


def seeded_model(
    name: str, seed: int, num_digits: int = 3, hidden_size=None
) -> nn.Module:
    """Build a model whose initial weights depend on ``seed`` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, num_digits=num_digits, hidden_size=hidden_size)


def shuffle_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + SHUFFLE_SEED_OFFSET)


def batch_slices(num_examples: int, batch_size: int) -> list[slice]:
    """The mini-batches of one epoch; the last one may be smaller."""
    return [slice(s, s + batch_size) for s in range(0, num_examples, batch_size)]


def is_eval_epoch(epoch: int, config: TrainConfig) -> bool:
    return epoch % config.eval_every == 0 or epoch == config.epochs


@torch.no_grad()
def evaluate(model: nn.Module, examples: Examples) -> tuple[float, float]:
    """Return (mean NLL per digit, exact-match accuracy) on ``examples``."""
    log_probs = model(examples.features)
    loss = nn.functional.nll_loss(log_probs.flatten(0, 1), examples.labels.flatten())
    return loss.item(), exact_match_accuracy(log_probs.argmax(-1), examples.labels)


@dataclass
class RunResult:
    """One trained model: its weights, learning curves and outcome."""

    model: str
    seed: int
    state: dict
    epochs_run: int
    final_train_loss: float
    test_accuracy: float
    stop_reason: str  # "epochs", "loss_threshold" or "non_finite"
    curves: dict = field(default_factory=dict)


def train_plain(name: str, seed: int, config: TrainConfig, splits: Splits) -> RunResult:
    """Train one model with the plain loop and return its result."""
    device = resolve_device(config.device)
    model = seeded_model(name, seed, config.num_digits, config.hidden_size).to(device)
    train, validation = splits.train.to(device), splits.validation.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = shuffle_generator(seed)
    curves = {"epoch": [], **{key: [] for key in CURVE_KEYS}}
    record_curves(curves, 0, model, train, validation)
    epoch, epoch_loss, stop_reason = 0, math.inf, "epochs"
    last_report = time.monotonic()

    # --8<-- [start:loop]
    for epoch in range(1, config.epochs + 1):
        # one pass over the shuffled training split
        order = torch.randperm(len(train), generator=generator).to(device)
        epoch_loss = run_epoch(model, optimizer, train, order, config.batch_size)

        # measure, report, and decide whether to stop
        if is_eval_epoch(epoch, config):
            record_curves(curves, epoch, model, train, validation)
        if time.monotonic() - last_report > PROGRESS_INTERVAL_S:
            log.info(
                "%s seed %d | epoch %6d/%d | loss %.4f",
                name,
                seed,
                epoch,
                config.epochs,
                epoch_loss,
            )
            last_report = time.monotonic()
        if not math.isfinite(epoch_loss):
            stop_reason = "non_finite"
            break
        if epoch_loss < config.loss_threshold:
            stop_reason = "loss_threshold"
            break
    # --8<-- [end:loop]

    if curves["epoch"][-1] != epoch:
        record_curves(curves, epoch, model, train, validation)
    _, test_accuracy = evaluate(model, splits.test.to(device))
    state = {
        key: value.detach().cpu().clone() for key, value in model.state_dict().items()
    }
    return RunResult(
        name, seed, state, epoch, epoch_loss, test_accuracy, stop_reason, curves
    )


# --8<-- [start:epoch]
def run_epoch(
    model, optimizer, train: Examples, order: torch.Tensor, batch_size: int
) -> float:
    """Take one Adam step per mini-batch; return the epoch's mean batch loss."""
    total, count = 0.0, 0
    for batch in batch_slices(len(train), batch_size):
        indices = order[batch]
        log_probs = model(train.features[indices])
        loss = nn.functional.nll_loss(
            log_probs.flatten(0, 1), train.labels[indices].flatten()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
        count += 1
    return total / count


# --8<-- [end:epoch]


def record_curves(curves, epoch, model, train, validation):
    train_loss, train_accuracy = evaluate(model, train)
    validation_loss, validation_accuracy = evaluate(model, validation)
    curves["epoch"].append(epoch)
    curves["train_loss"].append(train_loss)
    curves["train_accuracy"].append(train_accuracy)
    curves["validation_loss"].append(validation_loss)
    curves["validation_accuracy"].append(validation_accuracy)
