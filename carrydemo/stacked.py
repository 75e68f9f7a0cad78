"""Train many models of one architecture at once, over stacked weights.

Entry point::

    results = train_stacked("rnn", seeds=range(10), config=config, splits=splits)

gives one ``RunResult`` per seed, in the format of ``train.train_plain`` (a
state dict with the nn.Module's key names, the learning curves at the same
epochs, the stop reason), so ``results.write_results`` and
``results.load_trained_model`` take them unchanged. ``lrs`` gives every member
its own learning rate (a learning-rate sweep in one run).

Every member follows the plain loop's algorithm exactly: its initial weights
come from ``train.seeded_model(name, seed)``, its batch order from its own
``train.shuffle_generator(seed)``, its Adam state is its own, and it stops on
its own (loss below the threshold, or a non-finite loss) while the others go
on. What differs is only how the arithmetic is scheduled:

- all K members' parameters live in one (K, P) tensor, the weights being views
  into it, and so do the gradients and Adam's moments: one Adam update is a
  handful of tensor operations for all members together;
- forward and backward passes (backpropagation through time for the RNN) are
  written by hand with batched matrix products, one product per layer for all
  members, instead of one autograd graph per model;
- a member that stops is removed from the stack, so it costs nothing after.

These models are so small (about 6 MFLOP per RNN epoch) that the time goes to
the fixed cost of each tensor operation, not to arithmetic; stacking pays that
cost once for K models. The same code runs on CPU and CUDA (untested on CUDA:
there was no GPU where it was written).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from carrydemo.config import TrainConfig
from carrydemo.data import Examples, Splits
from carrydemo.train import (
    CURVE_KEYS,
    PROGRESS_INTERVAL_S,
    RunResult,
    batch_slices,
    is_eval_epoch,
    resolve_device,
    seeded_model,
    shuffle_generator,
)

log = logging.getLogger(__name__)

# torch.optim.Adam's defaults, which the plain loop uses.
BETAS = (0.9, 0.999)
EPS = 1e-8
CHECKPOINT_VERSION = 1


# --- the two architectures, forward and backward by hand ---------------------


class StackedRNN:
    """K Elman RNNs (tanh, both biases) with a Linear read-out at every step."""

    def __init__(self, params: torch.Tensor, shapes: dict):
        views = split_views(params, shapes)
        self.w_ih = views["rnn.weight_ih_l0"]  # (K, H, 2)
        self.w_hh = views["rnn.weight_hh_l0"]  # (K, H, H)
        self.b_ih = views["rnn.bias_ih_l0"].unsqueeze(1)  # (K, 1, H)
        self.b_hh = views["rnn.bias_hh_l0"].unsqueeze(1)
        self.w_out = views["output.weight"]  # (K, 10, H)
        self.b_out = views["output.bias"].unsqueeze(1)  # (K, 1, 10)

    def forward(self, features: torch.Tensor):
        """Log-probabilities (K, B*T, 10) for features (K, B, T, 2), and saved state."""
        num_members, batch_size, num_steps, _ = features.shape
        hidden_size = self.w_hh.shape[1]

        # the input's share of every step at once, both biases included
        inputs = torch.baddbmm(
            self.b_ih + self.b_hh,
            features.reshape(num_members, batch_size * num_steps, 2),
            self.w_ih.transpose(1, 2),
        ).view(num_members, batch_size, num_steps, hidden_size)

        # the recurrence, one step at a time; the state starts at zero
        state = torch.tanh(inputs[:, :, 0])
        states = [state]
        for step in range(1, num_steps):
            state = torch.baddbmm(inputs[:, :, step], state, self.w_hh.transpose(1, 2))
            state = torch.tanh(state)
            states.append(state)

        # read-out at every step
        flat_states = torch.stack(states, 2).view(num_members, -1, hidden_size)
        logits = torch.baddbmm(self.b_out, flat_states, self.w_out.transpose(1, 2))
        return torch.log_softmax(logits, -1), (features, states, flat_states)

    def backward(self, d_logits: torch.Tensor, saved) -> list[torch.Tensor]:
        """Gradients of every weight, in state-dict order, from d loss / d logits."""
        features, states, flat_states = saved
        num_members, batch_size, num_steps, _ = features.shape

        # read-out layer
        d_w_out = torch.bmm(d_logits.transpose(1, 2), flat_states)
        d_b_out = d_logits.sum(1)
        d_states = torch.bmm(d_logits, self.w_out).view(
            num_members, batch_size, num_steps, -1
        )

        # backpropagation through time, last step first
        d_pre = [None] * num_steps
        d_carry = None
        for step in reversed(range(num_steps)):
            d_state = d_states[:, :, step]
            if d_carry is not None:
                d_state = d_state + d_carry
            d_pre[step] = torch.ops.aten.tanh_backward(d_state, states[step])
            if step:
                d_carry = torch.bmm(d_pre[step], self.w_hh)

        # weights: the step before the first one had a zero state
        d_pre_flat = torch.stack(d_pre, 2).view(num_members, -1, d_states.shape[-1])
        previous = torch.stack([torch.zeros_like(states[0]), *states[:-1]], 2)
        d_w_hh = torch.bmm(d_pre_flat.transpose(1, 2), previous.view_as(d_pre_flat))
        inputs = features.reshape(num_members, -1, 2)
        d_w_ih = torch.bmm(d_pre_flat.transpose(1, 2), inputs)
        d_bias = d_pre_flat.sum(1)
        return [d_w_ih, d_w_hh, d_bias, d_bias, d_w_out, d_b_out]


class StackedMLP:
    """K MLPs: Linear, ReLU, Linear, log-softmax per digit."""

    def __init__(self, params: torch.Tensor, shapes: dict):
        views = split_views(params, shapes)
        self.w_hidden = views["hidden.weight"]  # (K, hidden, T*2)
        self.b_hidden = views["hidden.bias"].unsqueeze(1)
        self.w_out = views["output.weight"]  # (K, T*10, hidden)
        self.b_out = views["output.bias"].unsqueeze(1)

    def forward(self, features: torch.Tensor):
        """Log-probabilities (K, B*T, 10) for features (K, B, T, 2), and saved state."""
        num_members, batch_size, num_steps, _ = features.shape
        inputs = features.reshape(num_members, batch_size, num_steps * 2)
        hidden = torch.baddbmm(self.b_hidden, inputs, self.w_hidden.transpose(1, 2))
        hidden = torch.relu(hidden)
        logits = torch.baddbmm(self.b_out, hidden, self.w_out.transpose(1, 2))
        logits = logits.view(num_members, batch_size * num_steps, -1)
        return torch.log_softmax(logits, -1), (inputs, hidden)

    def backward(self, d_logits: torch.Tensor, saved) -> list[torch.Tensor]:
        """Gradients of every weight, in state-dict order, from d loss / d logits."""
        inputs, hidden = saved
        d_logits = d_logits.view(hidden.shape[0], hidden.shape[1], -1)
        d_w_out = torch.bmm(d_logits.transpose(1, 2), hidden)
        d_hidden = torch.bmm(d_logits, self.w_out)
        d_pre = torch.ops.aten.threshold_backward(d_hidden, hidden, 0)
        d_w_hidden = torch.bmm(d_pre.transpose(1, 2), inputs)
        return [d_w_hidden, d_pre.sum(1), d_w_out, d_logits.sum(1)]


ARCHITECTURES = {"mlp": StackedMLP, "rnn": StackedRNN}


def split_views(params: torch.Tensor, shapes: dict) -> dict:
    """Views of a (K, P) tensor, one per weight, shaped (K, *weight shape)."""
    views, offset = {}, 0
    for key, shape in shapes.items():
        size = math.prod(shape)
        views[key] = params[:, offset : offset + size].view(-1, *shape)
        offset += size
    return views


def nll_and_gradient(log_probs: torch.Tensor, labels: torch.Tensor):
    """Mean NLL per member (K,), and its gradient with respect to the logits.

    ``labels`` is (K, n, 1). The gradient of the mean NLL of log-softmax is
    (softmax - one-hot) / n, which is what autograd computes too.
    """
    count = log_probs.shape[1]
    loss = log_probs.gather(-1, labels).mean((1, 2)).neg_()
    d_logits = log_probs.exp()
    d_logits.scatter_add_(-1, labels, torch.full_like(labels, -1, dtype=d_logits.dtype))
    return loss, d_logits.div_(count)


# --- the stack: parameters, Adam state and members still training ------------


@dataclass
class Stack:
    """The members still training; row i of every tensor belongs to members[i]."""

    members: list[int]  # index of each row's member in the full list
    params: torch.Tensor  # (K, P)
    exp_avg: torch.Tensor  # Adam's first moment, (K, P)
    exp_avg_sq: torch.Tensor  # Adam's second moment, (K, P)
    lrs: torch.Tensor  # (K, 1)
    generators: list[torch.Generator]

    def keep(self, rows: list[int]) -> Stack:
        index = torch.tensor(rows, dtype=torch.long, device=self.params.device)
        return Stack(
            [self.members[row] for row in rows],
            self.params[index],
            self.exp_avg[index],
            self.exp_avg_sq[index],
            self.lrs[index],
            [self.generators[row] for row in rows],
        )


def adam_step(stack: Stack, grads: torch.Tensor, step: int) -> None:
    """One Adam update of every member, as torch.optim.Adam computes it."""
    beta1, beta2 = BETAS
    stack.exp_avg.lerp_(grads, 1 - beta1)
    stack.exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
    denom = stack.exp_avg_sq.sqrt().div_(math.sqrt(1 - beta2**step)).add_(EPS)
    step_sizes = stack.lrs / -(1 - beta1**step)
    stack.params.addcmul_(stack.exp_avg.div(denom), step_sizes)


# --- evaluation of every member at once --------------------------------------


@torch.no_grad()
def evaluate_stack(network, examples: Examples, num_members: int):
    """(mean NLL per digit, exact-match accuracy) of every member, as (K,) tensors."""
    features = examples.features.expand(num_members, *examples.features.shape)
    log_probs, _ = network.forward(features)
    labels = examples.labels.reshape(1, -1, 1).expand(num_members, -1, -1)
    loss = log_probs.gather(-1, labels).mean((1, 2)).neg_()
    predicted = log_probs.argmax(-1).view(num_members, *examples.labels.shape)
    correct = (predicted == examples.labels).all(-1).float().mean(-1)
    return loss, correct


@dataclass
class Outcome:
    """What one member has so far: curves while training, the rest once stopped."""

    curves: dict = field(default_factory=dict)
    state: torch.Tensor | None = None  # (P,) flat weights once stopped
    epochs_run: int = 0
    final_train_loss: float = math.inf
    stop_reason: str = ""


def record_curves(outcomes, stack, network, train, validation, epoch, rows):
    """Append one point of the learning curves of the members in ``rows``."""
    if not rows:
        return
    num_members = len(stack.members)
    train_loss, train_accuracy = evaluate_stack(network, train, num_members)
    validation_loss, validation_accuracy = evaluate_stack(
        network, validation, num_members
    )
    values = torch.stack(
        [train_loss, train_accuracy, validation_loss, validation_accuracy], 1
    ).tolist()
    for row in rows:
        curves = outcomes[stack.members[row]].curves
        curves["epoch"].append(epoch)
        for key, value in zip(CURVE_KEYS, values[row], strict=True):
            curves[key].append(value)


# --- the training loop --------------------------------------------------------


def train_stacked(
    name: str,
    seeds,
    config: TrainConfig,
    splits: Splits,
    lrs=None,
    checkpoint_path: Path | None = None,
) -> list[RunResult]:
    """Train one ``name`` model per seed in one stacked run; one RunResult each.

    ``lrs`` (optional) gives each member its own learning rate, in the order
    of ``seeds``; by default every member uses ``config.lr``. Hidden size and
    every other setting come from ``config``: members of one stack share
    their shapes. ``checkpoint_path`` (optional) is where the run's state is
    saved every few minutes, and resumed from when it exists.
    """
    seeds = list(seeds)
    lrs = [config.lr] * len(seeds) if lrs is None else [float(lr) for lr in lrs]
    if len(lrs) != len(seeds):
        raise ValueError(f"{len(lrs)} learning rates for {len(seeds)} seeds")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat; every member needs its own")
    device = resolve_device(config.device)
    run = StackedRun(name, seeds, lrs, config, splits, device)
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        run.load_checkpoint(checkpoint_path)
    run.train(checkpoint_path)
    return run.results()


class StackedRun:
    """One stacked training run: the stack, the data and every member's outcome."""

    def __init__(self, name, seeds, lrs, config, splits, device):
        self.name, self.seeds, self.config, self.device = name, seeds, config, device
        self.train_split = splits.train.to(device)
        self.validation = splits.validation.to(device)
        self.test = splits.test.to(device)

        # initial weights: each member's seeded nn.Module, flattened
        models = [
            seeded_model(name, seed, config.num_digits, config.hidden_size)
            for seed in seeds
        ]
        self.shapes = {k: tuple(v.shape) for k, v in models[0].state_dict().items()}
        params = torch.stack([flatten_state(model.state_dict()) for model in models])
        params = params.to(device)
        self.stack = Stack(
            list(range(len(seeds))),
            params,
            torch.zeros_like(params),
            torch.zeros_like(params),
            torch.tensor(lrs, dtype=params.dtype, device=device).unsqueeze(1),
            [shuffle_generator(seed) for seed in seeds],
        )
        self.outcomes = [
            Outcome(curves={"epoch": [], **{key: [] for key in CURVE_KEYS}})
            for _ in seeds
        ]
        self.epoch = 0  # epochs completed
        self.step = 0  # Adam steps taken by every member still training
        self.network = self.build_network()

    def build_network(self):
        return ARCHITECTURES[self.name](self.stack.params, self.shapes)

    def train(self, checkpoint_path=None, until_epoch=None) -> None:
        """Train until every member has stopped (or ``until_epoch``, for tests)."""
        config, started = self.config, time.monotonic()
        last_epoch = config.epochs if until_epoch is None else until_epoch
        last_report = last_save = started
        if self.epoch == 0:
            self.record(0, list(range(len(self.stack.members))))
        while self.epoch < last_epoch and self.stack.members:
            self.epoch += 1
            epoch_losses = self.run_epoch()
            self.finish_epoch(epoch_losses)
            now = time.monotonic()
            if now - last_report > PROGRESS_INTERVAL_S:
                self.report(epoch_losses, now - started)
                last_report = now
            if checkpoint_path is not None and now - last_save > CHECKPOINT_EVERY_S:
                self.save_checkpoint(checkpoint_path)
                last_save = now
        self.report(None, time.monotonic() - started)
        # a finished run is kept too, so a rerun after a later kill skips it
        if checkpoint_path is not None and not self.stack.members:
            self.save_checkpoint(checkpoint_path)

    def run_epoch(self) -> torch.Tensor:
        """One pass of every member over its own shuffled order; (K,) mean losses."""
        stack, train = self.stack, self.train_split
        orders = torch.stack(
            [torch.randperm(len(train), generator=g) for g in stack.generators]
        ).to(self.device)
        features = train.features[orders]  # (K, N, T, 2)
        labels = train.labels[orders].unsqueeze(-1)  # (K, N, T, 1)
        batches = batch_slices(len(train), self.config.batch_size)
        losses = torch.empty(len(batches), len(stack.members), device=self.device)
        for index, batch in enumerate(batches):
            self.step += 1
            log_probs, saved = self.network.forward(features[:, batch])
            batch_labels = labels[:, batch].flatten(1, 2)
            losses[index], d_logits = nll_and_gradient(log_probs, batch_labels)
            grads = self.network.backward(d_logits, saved)
            grads = torch.cat([grad.flatten(1) for grad in grads], 1)
            adam_step(stack, grads, self.step)
        # the plain loop sums its batch losses as Python floats (doubles)
        return losses.double().mean(0)

    def finish_epoch(self, epoch_losses: torch.Tensor) -> None:
        """Record curves, then stop the members that are done, as the plain loop."""
        epoch, config = self.epoch, self.config
        losses = epoch_losses.tolist()
        stopping = {
            row: stop_reason(loss, config.loss_threshold)
            for row, loss in enumerate(losses)
        }
        stopping = {row: reason for row, reason in stopping.items() if reason}
        if epoch == config.epochs:
            stopping = {row: stopping.get(row, "epochs") for row in range(len(losses))}
        if is_eval_epoch(epoch, config):
            self.record(epoch, list(range(len(losses))))
        else:
            self.record(epoch, sorted(stopping))
        if stopping:
            self.stop(stopping, losses)

    def stop(self, stopping: dict, losses: list) -> None:
        flat = self.stack.params.detach().cpu()
        for row, reason in stopping.items():
            outcome = self.outcomes[self.stack.members[row]]
            outcome.state = flat[row].clone()
            outcome.epochs_run = self.epoch
            outcome.final_train_loss = losses[row]
            outcome.stop_reason = reason
            if reason == "non_finite":
                seed = self.seeds[self.stack.members[row]]
                log.warning(
                    "%s seed %d stopped at epoch %d: training loss %s is not finite",
                    self.name,
                    seed,
                    self.epoch,
                    losses[row],
                )
        remaining = [row for row in range(len(losses)) if row not in stopping]
        self.stack = self.stack.keep(remaining)
        self.network = self.build_network()

    def record(self, epoch: int, rows: list[int]) -> None:
        record_curves(
            self.outcomes,
            self.stack,
            self.network,
            self.train_split,
            self.validation,
            epoch,
            rows,
        )

    def report(self, epoch_losses, elapsed: float) -> None:
        active = len(self.stack.members)
        if epoch_losses is None:
            losses = [outcome.final_train_loss for outcome in self.outcomes]
        else:
            losses = epoch_losses.tolist()
        log.info(
            "%s x%d | epoch %5d/%d | loss med %.4f | active %d/%d | %.1f s",
            self.name,
            len(self.seeds),
            self.epoch,
            self.config.epochs,
            statistics.median(losses),
            active,
            len(self.seeds),
            elapsed,
        )

    def save_checkpoint(self, path: Path) -> None:
        """Save everything needed to go on later: tensors and plain types only."""
        stack = self.stack
        checkpoint = {
            "version": CHECKPOINT_VERSION,
            "name": self.name,
            "seeds": list(self.seeds),
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "members": list(stack.members),
            "params": stack.params.cpu(),
            "exp_avg": stack.exp_avg.cpu(),
            "exp_avg_sq": stack.exp_avg_sq.cpu(),
            "lrs": stack.lrs.cpu(),
            "generators": [g.get_state() for g in stack.generators],
            "outcomes": [vars(outcome) for outcome in self.outcomes],
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        torch.save(checkpoint, partial)
        os.replace(partial, path)
        log.info(
            "%s x%d | saved checkpoint at epoch %d",
            self.name,
            len(self.seeds),
            self.epoch,
        )

    def load_checkpoint(self, path: Path) -> None:
        """Go on from a checkpoint of this same run; ignore one of another run."""
        try:
            checkpoint = torch.load(path, weights_only=True)
        except Exception as error:  # a damaged file only costs the work it held
            log.warning("ignoring checkpoint %s: %s", path, error)
            return
        same_run = (
            checkpoint.get("version") == CHECKPOINT_VERSION
            and checkpoint.get("name") == self.name
            and checkpoint.get("seeds") == list(self.seeds)
            and checkpoint.get("config") == self.config.to_dict()
        )
        if not same_run:
            log.warning("ignoring checkpoint %s: it belongs to another run", path)
            return
        generators = []
        for state in checkpoint["generators"]:
            generators.append(torch.Generator())
            generators[-1].set_state(state)
        device = self.device
        self.stack = Stack(
            checkpoint["members"],
            checkpoint["params"].to(device),
            checkpoint["exp_avg"].to(device),
            checkpoint["exp_avg_sq"].to(device),
            checkpoint["lrs"].to(device),
            generators,
        )
        self.outcomes = [Outcome(**fields) for fields in checkpoint["outcomes"]]
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        self.network = self.build_network()
        log.info(
            "%s x%d | resumed from epoch %d", self.name, len(self.seeds), self.epoch
        )

    def results(self) -> list[RunResult]:
        """One RunResult per member, with test accuracy and nn.Module key names."""
        states = torch.stack([outcome.state for outcome in self.outcomes])
        network = ARCHITECTURES[self.name](states.to(self.device), self.shapes)
        _, test_accuracy = evaluate_stack(network, self.test, len(self.seeds))
        test_accuracy = test_accuracy.tolist()
        return [
            RunResult(
                self.name,
                seed,
                unflatten_state(outcome.state, self.shapes),
                outcome.epochs_run,
                outcome.final_train_loss,
                test_accuracy[index],
                outcome.stop_reason,
                outcome.curves,
            )
            for index, (seed, outcome) in enumerate(
                zip(self.seeds, self.outcomes, strict=True)
            )
        ]


def stop_reason(loss: float, threshold: float) -> str:
    """Why a member with this epoch loss stops ("" while it goes on)."""
    if not math.isfinite(loss):
        return "non_finite"
    if loss < threshold:
        return "loss_threshold"
    return ""


def flatten_state(state: dict) -> torch.Tensor:
    return torch.cat([value.detach().reshape(-1) for value in state.values()])


def unflatten_state(flat: torch.Tensor, shapes: dict) -> dict:
    """The nn.Module state dict held in one member's flat row of weights."""
    views = split_views(flat.unsqueeze(0), shapes)
    return {key: view[0].clone() for key, view in views.items()}


CHECKPOINT_EVERY_S = float(os.environ.get("CARRYDEMO_CHECKPOINT_EVERY_S", "60"))
