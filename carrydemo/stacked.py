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
on. What differs is only how the arithmetic is scheduled, in one of two kernels.

On the CPU by default, ``kernel="c"``: one call per epoch to a C function
(``csrc/stacked_epoch.c``, compiled on first use by ``carrydemo.kernels``)
that trains every member through all its batches, member after member, with
the examples of a batch along the lanes of 8-float vectors. Nothing in it has
a fixed cost worth counting, so it runs at about a quarter of the machine's
large-matrix speed (``python -m carrydemo bench`` measures it).

On CUDA, or without a C compiler, ``kernel="tensor"``: PyTorch operations.

- all K members' parameters live in one (K, P) tensor, the weights being views
  into it, and so do the gradients and Adam's moments: one Adam update is one
  call of torch.optim.Adam's fused kernel for all members together;
- forward and backward passes (backpropagation through time for the RNN) are
  written by hand with batched matrix products, one product per layer for all
  members, instead of one autograd graph per model;
- the epoch's loss, needed only to decide whether to stop, is summed once per
  epoch from the log-probabilities that every step kept.

Here the time goes to the fixed cost of each tensor operation, about 26 per
Adam step, which stacking pays once for K models; at K = 50 and more, MKL's
batched products of these tiny matrices take over. With either kernel a
member that stops is removed from the stack, so it costs nothing after; the
tensor kernel runs on CUDA untested (there was no GPU where it was written).
``checkpoint_path`` makes a run resumable after a kill.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from carrydemo import kernels
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
MINUS_ONE = torch.tensor(-1.0)
CHECKPOINT_VERSION = 1
# Seconds between checkpoints of a run that has a checkpoint path.
CHECKPOINT_EVERY_S = float(os.environ.get("CARRYDEMO_CHECKPOINT_EVERY_S", "60"))


# --- the two architectures, forward and backward by hand ---------------------
#
# Each member's weights are held as a few augmented matrices, a bias being one
# more column of its weight matrix, so that one matrix product gives a layer's
# whole gradient (the inputs carry a column of ones). The rows of the (K, P)
# parameter tensor are these matrices, flattened one after the other.


class StackedNetwork:
    """What both stacked architectures share: buffers made once per layout."""

    group_class: type  # the buffers of a run of equal-size batches
    class_dim: int  # where the classes lie in a group's log_probs and labels

    def prepare(self, features: torch.Tensor, labels: torch.Tensor, batches) -> list:
        """Fill the buffers of every batch: features (K, N, T, 2), labels (K, N, T).

        The buffers are made once per stack size and batch layout, and filled
        again every epoch, so the views that every step uses are made once.
        """
        key = (features.shape, tuple((b.start, b.stop) for b in batches))
        if key not in self.buffers:
            num_members, num_examples, num_steps, _ = features.shape
            self.buffers[key] = [
                self.group_class(
                    run, num_members, num_steps, self.hidden_size, features.device
                )
                for run in equal_size_runs(batches, num_examples)
            ]
        prepared, self.groups = [], self.buffers[key]
        for group in self.groups:
            group.fill(features, labels)
            prepared.extend(group.batches)
        return prepared

    def batch_log_likelihoods(self) -> torch.Tensor:
        """Summed log-likelihood (batches, K) of every batch of the last epoch
        prepared, from the log-probabilities that its step kept."""
        sums = [
            summed_log_likelihood(group.log_probs, group.labels, self.class_dim)
            for group in self.groups
        ]
        return torch.cat(sums)


class StackedRNN(StackedNetwork):
    """K Elman RNNs (tanh, both biases) with a Linear read-out at every step.

    Per member: ``recurrent`` (H, 2 + H + 2) = [W_ih | W_hh | b_ih | b_hh] and
    ``readout`` (10, H + 1) = [W_out | b_out]. During an epoch one buffer
    Z (K, N, T + 1, 2 + H + 2) holds for every example and step t the row
    [x_t, h_(t-1), 1, 1], so that step t is one product with ``recurrent``.
    """

    @property
    def group_class(self) -> type:
        return RNNGroup

    class_dim = 2  # (count, K, 10, T*B)

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
        hidden = slice(FEATURE_SIZE, FEATURE_SIZE + self.hidden_size)
        self.recurrent_t = self.recurrent.transpose(1, 2)
        self.w_hh = self.recurrent[:, :, hidden]
        self.w_out = self.readout[:, :, :-1]
        if params.shape[0] != getattr(self, "num_members", None):
            self.num_members, self.buffers = params.shape[0], {}

    def logits(self, batch: RNNBatch) -> torch.Tensor:
        """Logits (K, 10, T*B) of one prepared batch."""
        # the recurrence: step t writes h_t into the rows of step t + 1, as
        # tanh(z) = 2 sigmoid(2z) - 1: PyTorch's tanh measured 3x slower than
        # its sigmoid on CPU, and the last operation doubles as the copy into
        # the strided rows; its rounding error (about 1e-7, absolute) is no
        # larger than that of the product before it
        for inputs, hidden in zip(batch.steps, batch.hidden, strict=True):
            pre = torch.baddbmm(
                batch.pre, inputs, self.recurrent_t, beta=0, alpha=2, out=batch.pre
            )
            torch.add(MINUS_ONE, pre.sigmoid_(), alpha=2, out=hidden)

        # read-out of every step from the rows [h_t, 1], classes second
        return torch.bmm(self.readout, batch.states_t)

    def log_probs(self, batch: RNNBatch) -> torch.Tensor:
        """Log-probabilities of one prepared batch, shaped (K, B, T, 10)."""
        num_members, num_steps, batch_size = batch.shape
        log_probs = torch.log_softmax(self.logits(batch), 1)
        log_probs = log_probs.view(num_members, NUM_CLASSES, num_steps, batch_size)
        return log_probs.permute(0, 3, 2, 1)

    def gradients(self, batch: RNNBatch, grads: torch.Tensor) -> None:
        """Gradients of the mean NLL of one prepared batch, into ``grads`` (K, P)."""
        baddbmm = torch.baddbmm
        # the forward pass (logits), inline: see ``logits``
        pre, recurrent_t = batch.pre, self.recurrent_t
        for inputs, hidden in batch.forward:
            baddbmm(pre, inputs, recurrent_t, beta=0, alpha=2, out=pre)
            torch.add(MINUS_ONE, pre.sigmoid_(), alpha=2, out=hidden)
        logits = torch.bmm(self.readout, batch.states_t)
        d_logits = torch.log_softmax(logits, 1, out=batch.log_probs)
        d_logits = torch.exp(d_logits, out=batch.d_logits).sub_(batch.one_hot)

        # read-out layer; 1/n of the mean comes in as the products' alpha
        scale, d_states, d_readout = batch.scale, batch.d_states, batch.d_readout
        baddbmm(d_readout, d_logits, batch.states, beta=0, alpha=scale, out=d_readout)
        baddbmm(
            d_states,
            batch.d_logits_t,
            self.w_out,
            beta=0,
            alpha=scale,
            out=d_states,
        )

        # backpropagation through time, last step first; d_states becomes d_pre
        w_hh = self.w_hh
        for d_step, d_next, hidden in batch.backward:
            if d_next is not None:
                d_step += torch.bmm(d_next, w_hh)
            tanh_backward(d_step, hidden, grad_input=d_step)

        # every recurrent weight and both biases in one product
        torch.bmm(batch.d_pre_t, batch.inputs, out=batch.d_recurrent)
        torch.cat(batch.flat_grads, 1, out=grads)


class RNNGroup:
    """Buffers of a run of equally sized batches, filled anew every epoch."""

    def __init__(self, run, num_members, num_steps, hidden_size, device):
        self.start, self.count, self.size = run
        width = FEATURE_SIZE + hidden_size + 2
        shape = (self.count, num_members, num_steps + 1, self.size, width)
        self.rows = torch.zeros(shape, device=device)
        self.rows[..., -2:] = 1.0
        self.features = self.rows[:, :, :num_steps, :, :FEATURE_SIZE]
        shape = (self.count, num_members, 1, num_steps * self.size)
        # filled or written before every read: no need to zero them here
        self.labels = torch.empty(shape, dtype=torch.long, device=device)
        shape = (self.count, num_members, NUM_CLASSES, num_steps * self.size)
        self.one_hot = torch.empty(shape, device=device)
        self.log_probs = torch.empty(shape, device=device)
        buffers = (self.rows, self.labels, self.one_hot, self.log_probs)
        self.batches = [
            RNNBatch(*batch_buffers, hidden_size)
            for batch_buffers in zip(*buffers, strict=True)
        ]

    def fill(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Copy in this run's examples, time-major: (count, K, T, B)."""
        num_members, _, num_steps, _ = features.shape
        stop = self.start + self.count * self.size
        chunk = features[:, self.start : stop].reshape(
            num_members, self.count, self.size, num_steps, FEATURE_SIZE
        )
        self.features.copy_(chunk.permute(1, 0, 3, 2, 4))
        chunk = labels[:, self.start : stop].reshape(
            num_members, self.count, self.size, num_steps
        )
        self.labels.view(self.count, num_members, num_steps, self.size).copy_(
            chunk.permute(1, 0, 3, 2)
        )
        self.one_hot.zero_().scatter_(2, self.labels, 1.0)


class RNNBatch:
    """One batch's buffers, and the views of them that every step uses.

    ``rows`` (K, T + 1, B, W) holds [x_t, h_(t-1), 1, 1] at step t; labels
    (K, 1, T*B) and one-hot targets (K, 10, T*B) are time-major too.
    """

    def __init__(self, rows, labels, one_hot, log_probs, hidden_size):
        num_members, num_slots, batch_size, width = rows.shape
        hidden = slice(FEATURE_SIZE, FEATURE_SIZE + hidden_size)
        self.shape = (num_members, num_slots - 1, batch_size)
        self.labels, self.one_hot, self.log_probs = labels, one_hot, log_probs
        self.d_logits = torch.empty_like(log_probs)
        self.d_logits_t = self.d_logits.transpose(1, 2)
        self.d_readout = rows.new_empty(num_members, NUM_CLASSES, width - 3)
        self.d_recurrent = rows.new_empty(num_members, hidden_size, width)
        self.flat_grads = [self.d_recurrent.flatten(1), self.d_readout.flatten(1)]
        self.pre = rows.new_empty(num_members, batch_size, hidden_size)
        self.scale = 1.0 / one_hot[0, 0].numel()  # 1/n of the mean NLL
        self.steps = [rows[:, step] for step in range(num_slots - 1)]
        self.hidden = [rows[:, step, :, hidden] for step in range(1, num_slots)]
        # [h_t, 1] of every step, and the inputs of every step, as views
        self.states = rows[:, 1:, :, FEATURE_SIZE:-1].view(num_members, -1, width - 3)
        self.states_t = self.states.transpose(1, 2)
        self.inputs = rows[:, :-1].view(num_members, -1, width)
        self.d_states = rows.new_empty(
            num_members, (num_slots - 1) * batch_size, hidden_size
        )
        self.d_steps = list(self.d_states.view(*self.shape, hidden_size).unbind(1))
        self.d_pre_t = self.d_states.transpose(1, 2)
        # per-step arguments of the forward and backward loops, made once
        self.forward = list(zip(self.steps, self.hidden, strict=True))
        nexts = [*self.d_steps[1:], None]
        self.backward = list(zip(self.d_steps, nexts, self.hidden, strict=True))[::-1]


class StackedMLP(StackedNetwork):
    """K MLPs: Linear, ReLU, Linear, log-softmax per digit.

    Per member: ``hidden`` (h, 2T + 1) = [W_hidden | b_hidden] and ``output``
    (10T, h + 1) = [W_output | b_output].
    """

    @property
    def group_class(self) -> type:
        return MLPGroup

    class_dim = 3  # (count, K, T, 10, B)

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
        self.hidden_t = self.hidden.transpose(1, 2)
        self.w_out = self.output[:, :, :-1]
        if params.shape[0] != getattr(self, "num_members", None):
            self.num_members, self.buffers = params.shape[0], {}

    def logits(self, batch: MLPBatch) -> torch.Tensor:
        """Logits (K, 10T, B) of one prepared batch."""
        pre = torch.bmm(batch.inputs, self.hidden_t)
        torch.clamp_min(pre, 0.0, out=batch.relu)
        return torch.bmm(self.output, batch.hidden_t)

    def log_probs(self, batch: MLPBatch) -> torch.Tensor:
        """Log-probabilities of one prepared batch, shaped (K, B, T, 10)."""
        logits = self.logits(batch).view(batch.one_hot.shape)  # (K, T, 10, B)
        return torch.log_softmax(logits, 2).permute(0, 3, 1, 2)

    def gradients(self, batch: MLPBatch, grads: torch.Tensor) -> None:
        """Gradients of the mean NLL of one prepared batch, into ``grads`` (K, P)."""
        logits = self.logits(batch).view(batch.one_hot.shape)
        d_logits = nll_gradient(logits, batch, 2)
        d_logits = d_logits.flatten(1, 2)  # (K, 10T, B)

        # output layer, then the hidden layer through the ReLU; 1/n of the
        # mean comes in as the products' alpha
        scale, d_output, d_hidden = batch.scale, batch.d_output, batch.d_hidden
        torch.baddbmm(
            d_output, d_logits, batch.hidden, beta=0, alpha=scale, out=d_output
        )
        d_logits_t = d_logits.transpose(1, 2)
        torch.baddbmm(
            d_hidden, d_logits_t, self.w_out, beta=0, alpha=scale, out=d_hidden
        )
        d_pre = torch.ops.aten.threshold_backward(d_hidden, batch.relu, 0)
        torch.bmm(d_pre.transpose(1, 2), batch.inputs, out=batch.d_hidden_layer)
        torch.cat(batch.flat_grads, 1, out=grads)


class MLPGroup:
    """Buffers of a run of equally sized batches, filled anew every epoch.

    Inputs [x, 1] (count, K, B, 2T + 1); labels and one-hot targets
    (count, K, T, 10, B), classes third, as the log-probabilities.
    """

    def __init__(self, run, num_members, num_steps, hidden_size, device):
        self.start, self.count, self.size = run
        shape = (self.count, num_members, self.size, num_steps * FEATURE_SIZE + 1)
        self.inputs = torch.ones(shape, device=device)
        shape = (self.count, num_members, num_steps, 1, self.size)
        # filled or written before every read: no need to zero them here
        self.labels = torch.empty(shape, dtype=torch.long, device=device)
        shape = (self.count, num_members, num_steps, NUM_CLASSES, self.size)
        self.one_hot = torch.empty(shape, device=device)
        self.log_probs = torch.empty(shape, device=device)
        # one hidden-layer buffer [ReLU output, 1] serves every batch
        shape = (num_members, self.size, hidden_size + 1)
        hidden = torch.ones(shape, device=device)
        buffers = (self.inputs, self.labels, self.one_hot, self.log_probs)
        self.batches = [
            MLPBatch(*batch_buffers, hidden)
            for batch_buffers in zip(*buffers, strict=True)
        ]

    def fill(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Copy in this run's examples, batch-major: (count, K, ...)."""
        num_members, _, num_steps, _ = features.shape
        stop = self.start + self.count * self.size
        chunk = features[:, self.start : stop].reshape(
            num_members, self.count, self.size, num_steps * FEATURE_SIZE
        )
        self.inputs[..., :-1] = chunk.transpose(0, 1)
        chunk = labels[:, self.start : stop].reshape(
            num_members, self.count, self.size, num_steps
        )
        self.labels.view(self.count, num_members, num_steps, self.size).copy_(
            chunk.permute(1, 0, 3, 2)
        )
        self.one_hot.zero_().scatter_(3, self.labels, 1.0)


class MLPBatch:
    """One batch's buffers and views, and the hidden-layer buffer it shares."""

    def __init__(self, inputs, labels, one_hot, log_probs, hidden):
        self.inputs = inputs  # (K, B, 2T + 1)
        self.labels, self.one_hot, self.log_probs = labels, one_hot, log_probs
        self.d_logits = torch.empty_like(log_probs)
        self.hidden = hidden  # (K, B, h + 1), [ReLU output, 1]
        self.hidden_t = hidden.transpose(1, 2)
        self.relu = hidden[:, :, :-1]
        num_members, num_steps, num_classes, _ = log_probs.shape
        self.d_output = hidden.new_empty(
            num_members, num_steps * num_classes, hidden.shape[2]
        )
        self.d_hidden = self.relu.new_empty(self.relu.shape)
        self.d_hidden_layer = inputs.new_empty(
            inputs.shape[0], self.relu.shape[2], inputs.shape[2]
        )
        self.flat_grads = [self.d_hidden_layer.flatten(1), self.d_output.flatten(1)]
        self.scale = 1.0 / labels[0].numel()  # 1/n of the mean NLL


ARCHITECTURES = {"mlp": StackedMLP, "rnn": StackedRNN}
# the operator itself, without OpOverload's Python wrapper around it
tanh_backward = torch.ops.aten.tanh_backward.grad_input._op


def equal_size_runs(batches: list[slice], num_examples: int):
    """(start, count, size) of each run of consecutive batches of one size."""
    runs = []
    for batch in batches:
        size = len(range(num_examples)[batch])
        if runs and runs[-1][2] == size:
            runs[-1][1] += 1
        else:
            runs.append([batch.start, 1, size])
    return [tuple(run) for run in runs]


def split_views(params: torch.Tensor, blocks: dict) -> dict:
    """Views of a (K, P) tensor, one per block, shaped (K, *block shape)."""
    views, offset = {}, 0
    for key, shape in blocks.items():
        size = math.prod(shape)
        views[key] = params[:, offset : offset + size].view(-1, *shape)
        offset += size
    return views


def nll_gradient(logits, batch, dim: int) -> torch.Tensor:
    """n times the gradient of the mean NLL of log-softmax, for the logits.

    Classes lie along ``dim``. The gradient is (softmax - one-hot) / n, which
    is what autograd computes too; the caller folds in the 1/n. The
    log-probabilities are kept in ``batch.log_probs`` for the epoch's loss.
    """
    log_probs = torch.log_softmax(logits, dim, out=batch.log_probs)
    return torch.exp(log_probs, out=batch.d_logits).sub_(batch.one_hot)


def summed_log_likelihood(log_probs, labels, dim: int) -> torch.Tensor:
    """Log-likelihood of the labels summed over all but the first two dims.

    The plain loop reads its loss after every step; here it is summed once
    per epoch from the log-probabilities every step kept.
    """
    return log_probs.gather(dim, labels).flatten(2).sum(2)


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

    def __post_init__(self):
        # runs of rows that share a learning rate: one fused Adam call each,
        # over views of the tensors made here once
        self.grads = torch.zeros_like(self.params)
        runs = []
        for row, lr in enumerate(self.lrs.flatten().tolist()):
            if runs and runs[-1][1] == lr:
                runs[-1][0] = slice(runs[-1][0].start, row + 1)
            else:
                runs.append([slice(row, row + 1), lr])
        tensors = (self.params, self.grads, self.exp_avg, self.exp_avg_sq)
        self.lr_runs = [
            ([[tensor[rows]] for tensor in tensors], lr) for rows, lr in runs
        ]

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


def adam_arguments(stack: Stack, step: torch.Tensor) -> list:
    """The (args, kwargs) of one Adam update of every member, made once per
    epoch so that every step only calls.

    Each call is the kernel of torch.optim.Adam(fused=True), one per run of
    members that share a learning rate, all their rows at once; ``step`` is
    the count of steps so far.
    """
    beta1, beta2 = BETAS
    steps = [step]
    return [
        (
            (params, grads, exp_avg, exp_avg_sq, [], steps),
            dict(
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=EPS,
                amsgrad=False,
                maximize=False,
            ),
        )
        for (params, grads, exp_avg, exp_avg_sq), lr in stack.lr_runs
    ]


# --- evaluation of every member at once --------------------------------------


@torch.inference_mode()
def evaluate_stack(network, examples: Examples, num_members: int):
    """(mean NLL per digit, exact-match accuracy) of every member, as (K,) tensors."""
    features = examples.features.expand(num_members, *examples.features.shape)
    labels = examples.labels.expand(num_members, *examples.labels.shape)
    whole = slice(0, len(examples))
    log_probs = network.log_probs(network.prepare(features, labels, [whole])[0])
    # classes made the last, contiguous dim: argmax over a strided dim
    # measured 3x slower than the copy and argmax together
    log_probs = log_probs.contiguous()
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
    kernel: str = "auto",
) -> list[RunResult]:
    """Train one ``name`` model per seed in one stacked run; one RunResult each.

    ``lrs`` (optional) gives each member its own learning rate, in the order
    of ``seeds``; by default every member uses ``config.lr``. Hidden size and
    every other setting come from ``config``: members of one stack share
    their shapes. ``checkpoint_path`` (optional) is where the run's state is
    saved every few minutes, and resumed from when it exists. ``kernel`` is
    "c" (the compiled kernel), "tensor" (tensor operations) or "auto": the
    compiled kernel on the CPU when it builds, tensor operations otherwise.
    """
    seeds = list(seeds)
    lrs = [config.lr] * len(seeds) if lrs is None else [float(lr) for lr in lrs]
    if len(lrs) != len(seeds):
        raise ValueError(f"{len(lrs)} learning rates for {len(seeds)} seeds")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat; every member needs its own")
    device = resolve_device(config.device)
    run = StackedRun(name, seeds, lrs, config, splits, device, kernel)
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        run.load_checkpoint(checkpoint_path)
    run.train(checkpoint_path)
    return run.results()


class StackedRun:
    """One stacked training run: the stack, the data and every member's outcome."""

    def __init__(self, name, seeds, lrs, config, splits, device, kernel="auto"):
        self.name, self.seeds, self.config = name, seeds, config
        self.device = device = torch.device(device)
        self.kernel = choose_kernel(kernel, device)
        self.train_split = splits.train.to(device)
        if self.kernel is not None:  # which reads them through raw pointers
            features, labels = self.train_split.features, self.train_split.labels
            self.train_split = Examples(
                features.float().contiguous(), labels.long().contiguous()
            )
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
        self.targets = {}  # batch_targets by number of batches
        self.step = 0  # Adam steps taken by every member still training
        self.step_count = torch.zeros((), device=device)  # the same, for Adam
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

    # inference mode skips autograd's bookkeeping of every operation, which
    # measured 10-15% of a step; the buffers made in it are only ever written
    # in it (here and in evaluate_stack)
    @torch.inference_mode()
    def run_epoch(self) -> torch.Tensor:
        """One pass of every member over its own shuffled order; (K,) mean losses."""
        stack, train = self.stack, self.train_split
        orders = torch.stack(
            [torch.randperm(len(train), generator=g) for g in stack.generators]
        )
        if self.kernel is not None:
            return self.run_kernel_epoch(orders)
        orders = orders.to(self.device)
        features, labels = train.features[orders], train.labels[orders]
        batches = batch_slices(len(train), self.config.batch_size)
        likelihoods = self.run_tensor_epoch(features, labels, batches)

        # summed log-likelihood of every batch and member, -loss * n; the
        # plain loop sums its batch losses as Python floats (doubles)
        targets = self.targets.get(len(batches))
        if targets is None:  # n of every batch, (batches, 1)
            targets = self.targets[len(batches)] = self.batch_targets(batches)
        return likelihoods.double().div_(targets).mean(0).neg_()

    def run_kernel_epoch(self, orders: torch.Tensor) -> torch.Tensor:
        """The epoch in the compiled kernel, which gathers each member's batches
        itself from ``orders`` (K, N); returns (K,) mean losses, as float64."""
        stack, config, train = self.stack, self.config, self.train_split
        num_members, num_examples = orders.shape
        losses = torch.empty(num_members, dtype=torch.float64)
        # the kernel reads and writes these through raw pointers: all
        # contiguous on the CPU, float32 but for int64 indices and labels
        tensors = (stack.params, stack.exp_avg, stack.exp_avg_sq, stack.lrs)
        data = (train.features, train.labels, orders, losses)
        status = getattr(self.kernel, f"carrydemo_{self.name}_epoch")(
            num_members,
            num_examples,
            self.config.num_digits,
            self.network.hidden_size,
            config.batch_size,
            *(tensor.data_ptr() for tensor in tensors),
            self.step,
            *(tensor.data_ptr() for tensor in data),
            *BETAS,
            EPS,
        )
        if status != 0:
            raise RuntimeError(f"the C kernel refused its arguments ({status})")
        self.step += math.ceil(num_examples / config.batch_size)
        return losses

    def run_tensor_epoch(self, features, labels, batches) -> torch.Tensor:
        """The epoch in tensor operations; summed log-likelihoods (batches, K)."""
        stack = self.stack
        prepared = self.network.prepare(features, labels, batches)
        gradients, grads, step_count = (
            self.network.gradients,
            stack.grads,
            self.step_count,
        )
        adam_calls = adam_arguments(stack, step_count)
        fused_adam, step = torch._fused_adam_, self.step
        for batch in prepared:
            step += 1
            step_count.fill_(step)
            gradients(batch, grads)
            for args, kwargs in adam_calls:
                fused_adam(*args, **kwargs)
        self.step = step
        return self.network.batch_log_likelihoods()

    def batch_targets(self, batches) -> torch.Tensor:
        """How many digits every batch predicts, shaped (batches, 1)."""
        num_examples, num_steps = self.train_split.labels.shape
        sizes = [len(range(num_examples)[batch]) * num_steps for batch in batches]
        return torch.tensor(sizes, dtype=torch.float64, device=self.device)[:, None]

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


KERNELS = ("auto", "c", "tensor")


def choose_kernel(kernel: str, device: torch.device):
    """The compiled kernel (a ctypes library) to train with, or None for
    tensor operations; "c" where it cannot run is an error, "auto" is not."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel {kernel!r} is not one of {', '.join(KERNELS)}")
    if kernel == "tensor" or (kernel == "auto" and device.type != "cpu"):
        return None
    if device.type != "cpu":
        raise ValueError(f"the C kernel runs on the CPU only, not on {device}")
    try:
        return kernels.load()
    except kernels.KernelError as error:
        if kernel == "c":
            raise
        warn_once(f"C kernel not available ({error}): training with tensor operations")
        return None


@functools.cache
def warn_once(message: str) -> None:
    log.warning("%s", message)


def stop_reason(loss: float, threshold: float) -> str:
    """Why a member with this epoch loss stops ("" while it goes on)."""
    if not math.isfinite(loss):
        return "non_finite"
    if loss < threshold:
        return "loss_threshold"
    return ""
