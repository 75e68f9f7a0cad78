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
from carrydemo.models import FEATURE_SIZE, NUM_CLASSES
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
#
# Each member's weights are held as a few augmented matrices, a bias being one
# more column of its weight matrix, so that one matrix product gives a layer's
# whole gradient (the inputs carry a column of ones). The rows of the (K, P)
# parameter tensor are these matrices, flattened one after the other.


class StackedRNN:
    """K Elman RNNs (tanh, both biases) with a Linear read-out at every step.

    Per member: ``recurrent`` (H, 2 + H + 2) = [W_ih | W_hh | b_ih | b_hh] and
    ``readout`` (10, H + 1) = [W_out | b_out]. During an epoch one buffer
    Z (K, N, T + 1, 2 + H + 2) holds for every example and step t the row
    [x_t, h_(t-1), 1, 1], so that step t is one product with ``recurrent``.
    """

    def __init__(self, shapes: dict):
        self.hidden_size = shapes["rnn.weight_hh_l0"][0]
        hidden_size = self.hidden_size
        self.blocks = {
            "recurrent": (hidden_size, FEATURE_SIZE + hidden_size + 2),
            "readout": (NUM_CLASSES, hidden_size + 1),
        }

    def to_flat(self, state: dict) -> torch.Tensor:
        recurrent = torch.cat(
            [
                state["rnn.weight_ih_l0"],
                state["rnn.weight_hh_l0"],
                state["rnn.bias_ih_l0"].unsqueeze(1),
                state["rnn.bias_hh_l0"].unsqueeze(1),
            ],
            1,
        )
        readout = torch.cat([state["output.weight"], state["output.bias"][:, None]], 1)
        return torch.cat([recurrent.flatten(), readout.flatten()])

    def to_state(self, flat: torch.Tensor) -> dict:
        views = split_views(flat.unsqueeze(0), self.blocks)
        recurrent, readout = views["recurrent"][0], views["readout"][0]
        hidden_end = FEATURE_SIZE + self.hidden_size
        return {
            "rnn.weight_ih_l0": recurrent[:, :FEATURE_SIZE].clone(),
            "rnn.weight_hh_l0": recurrent[:, FEATURE_SIZE:hidden_end].clone(),
            "rnn.bias_ih_l0": recurrent[:, hidden_end].clone(),
            "rnn.bias_hh_l0": recurrent[:, hidden_end + 1].clone(),
            "output.weight": readout[:, :-1].clone(),
            "output.bias": readout[:, -1].clone(),
        }

    def bind(self, params: torch.Tensor) -> None:
        """Take the weights of every member as views of ``params`` (K, P)."""
        views = split_views(params, self.blocks)
        self.recurrent, self.readout = views["recurrent"], views["readout"]

    def prepare(self, features: torch.Tensor, labels: torch.Tensor) -> dict:
        """Buffers for one epoch: features (K, N, T, 2), labels (K, N, T)."""
        num_members, num_examples, num_steps, _ = features.shape
        rows = torch.zeros(
            num_members, num_examples, num_steps + 1, self.blocks["recurrent"][1]
        )
        rows = rows.to(features.device)
        rows[:, :, :num_steps, :FEATURE_SIZE] = features
        rows[:, :, :, -2:] = 1.0
        # labels and one-hot targets laid out (K, 10, N, T), classes second
        labels = labels.unsqueeze(1)
        one_hot = torch.zeros(num_members, NUM_CLASSES, num_examples, num_steps)
        one_hot = one_hot.to(features.device).scatter_(1, labels, 1.0)
        return {"rows": rows, "labels": labels, "one_hot": one_hot}

    def forward(self, prepared: dict, batch: slice):
        """Log-probabilities (K, 10, B*T) of one batch, and what backward needs."""
        rows = prepared["rows"][:, batch]  # (K, B, T + 1, 2 + H + 2)
        num_members, batch_size, num_slots, width = rows.shape
        hidden = slice(FEATURE_SIZE, FEATURE_SIZE + self.hidden_size)

        # the recurrence: step t writes h_t into the row of step t + 1
        recurrent_t = self.recurrent.transpose(1, 2)
        for step in range(num_slots - 1):
            pre = torch.bmm(rows[:, :, step], recurrent_t)
            torch.tanh(pre, out=rows[:, :, step + 1, hidden])

        # read-out at every step, classes second: (K, 10, B*T)
        states = rows[:, :, 1:, FEATURE_SIZE:-1].reshape(num_members, -1, width - 3)
        logits = torch.bmm(self.readout, states.transpose(1, 2))
        return torch.log_softmax(logits, 1), (rows, states)

    def log_probs(self, prepared: dict) -> torch.Tensor:
        """Log-probabilities of all examples, shaped (K, N, T, 10)."""
        log_probs, _ = self.forward(prepared, slice(None))
        shape = prepared["one_hot"].shape
        return log_probs.view(shape).permute(0, 2, 3, 1)

    def loss_and_grads(self, prepared: dict, batch: slice):
        """Mean NLL (K,) of one batch, and the gradients (K, P) of every member."""
        log_probs, (rows, states) = self.forward(prepared, batch)
        labels = prepared["labels"][:, :, batch].flatten(2)
        one_hot = prepared["one_hot"][:, :, batch].flatten(2)
        loss, d_logits = nll_and_gradient(log_probs, labels, one_hot, dim=1)
        num_members, batch_size, num_slots, width = rows.shape
        hidden_size = self.hidden_size

        # read-out layer
        d_readout = torch.bmm(d_logits, states)
        d_states = torch.bmm(d_logits.transpose(1, 2), self.readout[:, :, :-1])
        d_states = d_states.view(num_members, batch_size, num_slots - 1, hidden_size)

        # backpropagation through time, last step first; d_states becomes d_pre
        hidden = rows[:, :, 1:, FEATURE_SIZE : FEATURE_SIZE + hidden_size]
        d_tanh = torch.addcmul(self.one(rows), hidden, hidden, value=-1)
        w_hh = self.recurrent[:, :, FEATURE_SIZE : FEATURE_SIZE + hidden_size]
        for step in reversed(range(num_slots - 1)):
            d_step = d_states[:, :, step]
            if step < num_slots - 2:
                d_step.baddbmm_(d_states[:, :, step + 1], w_hh)
            d_step.mul_(d_tanh[:, :, step])

        # every recurrent weight and both biases in one product
        inputs = rows[:, :, :-1].reshape(num_members, -1, width)
        d_pre = d_states.view(num_members, -1, hidden_size)
        d_recurrent = torch.bmm(d_pre.transpose(1, 2), inputs)
        return loss, torch.cat([d_recurrent.flatten(1), d_readout.flatten(1)], 1)

    @staticmethod
    def one(like: torch.Tensor) -> torch.Tensor:
        return torch.ones((), dtype=like.dtype, device=like.device)


class StackedMLP:
    """K MLPs: Linear, ReLU, Linear, log-softmax per digit.

    Per member: ``hidden`` (h, 2T + 1) = [W_hidden | b_hidden] and ``output``
    (10T, h + 1) = [W_output | b_output].
    """

    def __init__(self, shapes: dict):
        hidden_size, num_inputs = shapes["hidden.weight"]
        num_outputs = shapes["output.weight"][0]
        self.hidden_size = hidden_size
        self.blocks = {
            "hidden": (hidden_size, num_inputs + 1),
            "output": (num_outputs, hidden_size + 1),
        }

    def to_flat(self, state: dict) -> torch.Tensor:
        hidden = torch.cat([state["hidden.weight"], state["hidden.bias"][:, None]], 1)
        output = torch.cat([state["output.weight"], state["output.bias"][:, None]], 1)
        return torch.cat([hidden.flatten(), output.flatten()])

    def to_state(self, flat: torch.Tensor) -> dict:
        views = split_views(flat.unsqueeze(0), self.blocks)
        hidden, output = views["hidden"][0], views["output"][0]
        return {
            "hidden.weight": hidden[:, :-1].clone(),
            "hidden.bias": hidden[:, -1].clone(),
            "output.weight": output[:, :-1].clone(),
            "output.bias": output[:, -1].clone(),
        }

    def bind(self, params: torch.Tensor) -> None:
        """Take the weights of every member as views of ``params`` (K, P)."""
        views = split_views(params, self.blocks)
        self.hidden, self.output = views["hidden"], views["output"]

    def prepare(self, features: torch.Tensor, labels: torch.Tensor) -> dict:
        """Buffers for one epoch: features (K, N, T, 2), labels (K, N, T)."""
        num_members, num_examples, num_steps, _ = features.shape
        ones = features.new_ones(num_members, num_examples, 1)
        inputs = torch.cat([features.flatten(2), ones], 2)  # (K, N, 2T + 1)
        # labels and one-hot targets laid out (K, T, 10, N), classes third
        labels = labels.transpose(1, 2).unsqueeze(2)
        one_hot = torch.zeros(num_members, num_steps, NUM_CLASSES, num_examples)
        one_hot = one_hot.to(features.device).scatter_(2, labels, 1.0)
        return {"inputs": inputs, "labels": labels, "one_hot": one_hot}

    def forward(self, prepared: dict, batch: slice):
        """Log-probabilities (K, T, 10, B) of one batch, and what backward needs."""
        inputs = prepared["inputs"][:, batch]  # (K, B, 2T + 1)
        num_members, batch_size, _ = inputs.shape
        hidden = inputs.new_ones(num_members, batch_size, self.hidden_size + 1)
        pre = torch.bmm(inputs, self.hidden.transpose(1, 2))
        torch.clamp_min(pre, 0.0, out=hidden[:, :, :-1])
        logits = torch.bmm(self.output, hidden.transpose(1, 2))  # (K, 10T, B)
        logits = logits.view(num_members, -1, NUM_CLASSES, batch_size)
        return torch.log_softmax(logits, 2), (inputs, hidden)

    def log_probs(self, prepared: dict) -> torch.Tensor:
        """Log-probabilities of all examples, shaped (K, N, T, 10)."""
        log_probs, _ = self.forward(prepared, slice(None))
        return log_probs.permute(0, 3, 1, 2)

    def loss_and_grads(self, prepared: dict, batch: slice):
        """Mean NLL (K,) of one batch, and the gradients (K, P) of every member."""
        log_probs, (inputs, hidden) = self.forward(prepared, batch)
        labels = prepared["labels"][..., batch]
        one_hot = prepared["one_hot"][..., batch]
        loss, d_logits = nll_and_gradient(log_probs, labels, one_hot, dim=2)
        d_logits = d_logits.flatten(1, 2)  # (K, 10T, B)

        # output layer, then the hidden layer through the ReLU
        d_output = torch.bmm(d_logits, hidden)
        d_hidden = torch.bmm(d_logits.transpose(1, 2), self.output[:, :, :-1])
        d_pre = torch.ops.aten.threshold_backward(d_hidden, hidden[:, :, :-1], 0)
        d_hidden_layer = torch.bmm(d_pre.transpose(1, 2), inputs)
        return loss, torch.cat([d_hidden_layer.flatten(1), d_output.flatten(1)], 1)


ARCHITECTURES = {"mlp": StackedMLP, "rnn": StackedRNN}


def split_views(params: torch.Tensor, blocks: dict) -> dict:
    """Views of a (K, P) tensor, one per block, shaped (K, *block shape)."""
    views, offset = {}, 0
    for key, shape in blocks.items():
        size = math.prod(shape)
        views[key] = params[:, offset : offset + size].view(-1, *shape)
        offset += size
    return views


def nll_and_gradient(log_probs, labels, one_hot, dim: int):
    """Mean NLL per member (K,), and its gradient with respect to the logits.

    Classes lie along ``dim``. The gradient of the mean NLL of log-softmax is
    (softmax - one-hot) / n, which is what autograd computes too; it is made
    in place of ``log_probs``.
    """
    count = log_probs.numel() // (log_probs.shape[0] * log_probs.shape[dim])
    loss = log_probs.gather(dim, labels).flatten(1).mean(1).neg_()
    d_logits = log_probs.exp_().sub_(one_hot).div_(count)
    return loss, d_logits


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
    labels = examples.labels.expand(num_members, *examples.labels.shape)
    log_probs = network.log_probs(network.prepare(features, labels))
    loss = log_probs.gather(-1, labels.unsqueeze(-1)).flatten(1).mean(1).neg_()
    predicted = log_probs.argmax(-1)
    correct = (predicted == labels).all(-1).float().mean(-1)
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
        shapes = {k: tuple(v.shape) for k, v in models[0].state_dict().items()}
        self.network = ARCHITECTURES[name](shapes)
        params = torch.stack([self.network.to_flat(m.state_dict()) for m in models])
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
        self.network.bind(self.stack.params)

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
        prepared = self.network.prepare(train.features[orders], train.labels[orders])
        batches = batch_slices(len(train), self.config.batch_size)
        losses = torch.empty(len(batches), len(stack.members), device=self.device)
        for index, batch in enumerate(batches):
            self.step += 1
            losses[index], grads = self.network.loss_and_grads(prepared, batch)
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
        self.network.bind(self.stack.params)

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
        self.network.bind(self.stack.params)
        log.info(
            "%s x%d | resumed from epoch %d", self.name, len(self.seeds), self.epoch
        )

    def results(self) -> list[RunResult]:
        """One RunResult per member, with test accuracy and nn.Module key names."""
        states = torch.stack([outcome.state for outcome in self.outcomes])
        self.network.bind(states.to(self.device))
        _, test_accuracy = evaluate_stack(self.network, self.test, len(self.seeds))
        test_accuracy = test_accuracy.tolist()
        return [
            RunResult(
                self.name,
                seed,
                self.network.to_state(outcome.state),
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


CHECKPOINT_EVERY_S = float(os.environ.get("CARRYDEMO_CHECKPOINT_EVERY_S", "60"))
