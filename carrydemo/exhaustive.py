"""Scoring a model on every pair of numbers, broken down by the carries a sum needs.

For 3 digits there are 10**6 pairs (a, b). They are enumerated in "prefix
order": example n has the digit pairs of its units, tens and hundreds as the
base-100 digits of n, most significant first, so the 100**(t + 1) examples that
share their first t + 1 steps form contiguous blocks. An RNN's hidden state
after step t depends on those steps only, which lets ``predict_all_pairs``
compute each distinct state once instead of once per example.

Carry bookkeeping, for a sum written units first:

- the carry out of digit t is 1 when a_t + b_t + (carry into t) >= 10;
- "carries" counts the carries that enter a digit of the label (out of digits
  0..T-2); the carry out of the top digit is dropped with the label's
  (T + 1)-th digit, so no network ever has to use it;
- a carry "ripples" through digit t when a_t + b_t = 9 and a carry comes in:
  the digit passes it on only because it received one. The "longest carry
  chain" is the most label digits that one carry changes, the digit it enters
  plus every digit it ripples into. 999 + 1 has one chain of length 2 (tens and
  hundreds); 55 + 55 has two carries but chains of length 1.
"""

from __future__ import annotations

import torch
from torch import nn

from carrydemo.data import Examples, labels_for
from carrydemo.models import MLP, ElmanRNN

CHUNK = 100_000  # examples per forward pass of a model without a shortcut
PREFIX_BLOCK = 100  # prefixes per block of the RNN's shortcut


def all_pairs_digits(num_digits: int = 3) -> torch.Tensor:
    """Every sequence of ``num_digits`` digit pairs, (100**T, T, 2), prefix order."""
    pairs = torch.arange(100)
    step = torch.stack([pairs // 10, pairs % 10], dim=1)  # (100, 2): (a_t, b_t)
    index = torch.arange(100**num_digits)
    steps = [(index // 100 ** (num_digits - 1 - t)) % 100 for t in range(num_digits)]
    return torch.stack([step[s] for s in steps], dim=1)


def all_pairs(num_digits: int = 3) -> Examples:
    """All 100**T examples of ``num_digits`` digits, in prefix order."""
    digits = all_pairs_digits(num_digits)
    return Examples(digits.float(), labels_for(digits))


def carries_out(digits: torch.Tensor) -> torch.Tensor:
    """The carry out of every digit, (N, T) int64, for digit pairs (N, T, 2)."""
    carry = torch.zeros(digits.shape[0], dtype=torch.long)
    out = torch.empty(digits.shape[:2], dtype=torch.long)
    for t in range(digits.shape[1]):
        carry = (digits[:, t, 0] + digits[:, t, 1] + carry >= 10).long()
        out[:, t] = carry
    return out


def carry_counts(digits: torch.Tensor) -> torch.Tensor:
    """How many carries enter a digit of the label, per example."""
    return carries_out(digits)[:, :-1].sum(dim=1)


def longest_carry_chains(digits: torch.Tensor) -> torch.Tensor:
    """The most label digits one carry changes, per example (0 without carries)."""
    carries = carries_out(digits)
    digit_sums = digits[:, :, 0] + digits[:, :, 1]
    reach = torch.zeros(digits.shape[0], dtype=torch.long)
    longest = torch.zeros_like(reach)
    for t in range(1, digits.shape[1]):
        # a carry into digit t extends the chain if digit t-1 only passed it on
        rippled = (digit_sums[:, t - 1] == 9) & (reach > 0)
        reach = torch.where(
            carries[:, t - 1] == 1, torch.where(rippled, reach + 1, 1), 0
        )
        longest = torch.maximum(longest, reach)
    return longest


@torch.no_grad()
def predict_all_pairs(model: nn.Module, num_digits: int = 3) -> torch.Tensor:
    """Predicted digits (100**T, T) for every pair, in prefix order."""
    model = model.eval()
    if isinstance(model, ElmanRNN):
        return _rnn_all_pairs(model, num_digits)
    if isinstance(model, MLP):
        features = all_pairs_digits(num_digits).float()
        chunks = [model(chunk).argmax(-1) for chunk in features.split(CHUNK)]
        return torch.cat(chunks)
    raise TypeError(f"cannot score a {type(model).__name__}; expected MLP or ElmanRNN")


def _rnn_all_pairs(model: ElmanRNN, num_digits: int) -> torch.Tensor:
    """Run the RNN once per distinct prefix: 100 states, then 100**2, ..."""
    rnn = model.rnn
    pairs = torch.arange(100)
    inputs = torch.stack([pairs // 10, pairs % 10], dim=1).float()
    input_part = inputs @ rnn.weight_ih_l0.T + rnn.bias_ih_l0  # (100, H)
    hidden = torch.zeros(1, model.config.hidden_size)
    predictions = []
    for t in range(num_digits):
        # every known prefix followed by every digit pair of step t, in blocks
        # small enough to stay in the CPU's cache
        recurrent = hidden @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
        states, digits = [], []
        for block in recurrent.split(PREFIX_BLOCK):
            state = torch.tanh(block[:, None, :] + input_part[None, :, :]).flatten(0, 1)
            digits.append(model.output(state).argmax(-1))
            if t < num_digits - 1:
                states.append(state)
        hidden = torch.cat(states) if states else None
        # digit t is shared by the 100**(T-1-t) examples that extend each prefix
        repeats = 100 ** (num_digits - 1 - t)
        predictions.append(torch.cat(digits).repeat_interleave(repeats))
    return torch.stack(predictions, dim=1)


def score(predicted: torch.Tensor, examples: Examples, groups=None) -> dict:
    """Exact-match and per-digit accuracy, overall and by carries and chain length.

    ``groups`` is ``carry_groups(examples)``, when already at hand.
    """
    carries, chains = carry_groups(examples) if groups is None else groups
    correct_digits = predicted == examples.labels
    correct = correct_digits.all(dim=1)
    return {
        "examples": len(examples),
        "exact_match": correct.float().mean().item(),
        "per_digit": correct_digits.float().mean().item(),
        "per_position": correct_digits.float().mean(dim=0).tolist(),
        "by_carries": breakdown(correct, carries),
        "by_chain": breakdown(correct, chains),
        "by_largest_column": breakdown(correct, largest_columns(examples)),
    }


def largest_columns(examples: Examples) -> torch.Tensor:
    """The largest column sum a_t + b_t + carry over a sum's digits (0..19)."""
    digits = examples.features.long()
    carries_in = torch.nn.functional.pad(carries_out(digits)[:, :-1], (1, 0))
    return (digits[:, :, 0] + digits[:, :, 1] + carries_in).amax(dim=1)


def carry_groups(examples: Examples) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry count and longest carry chain of every example."""
    digits = examples.features.long()
    return carry_counts(digits), longest_carry_chains(digits)


def breakdown(correct: torch.Tensor, groups: torch.Tensor) -> dict:
    """Exact-match accuracy and size of every group, keyed by the group's value."""
    result = {}
    for value in groups.unique().tolist():
        members = correct[groups == value]
        result[str(value)] = {
            "examples": members.numel(),
            "exact_match": members.float().mean().item(),
        }
    return result
