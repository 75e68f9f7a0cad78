"""A linear probe: how well a logistic regression reads the carry from a state."""

from __future__ import annotations

import torch

from carrydemo.data import Examples
from carrydemo.exhaustive import carries_out
from carrydemo.models import ElmanRNN

PROBE_STEPS = 100  # LBFGS iterations; the problem is convex and tiny
# A small L2 penalty keeps the weights finite when the carry is linearly
# separable, which it is in a working RNN; without it LBFGS runs to its limit.
PROBE_L2 = 1e-3


@torch.no_grad()
def hidden_and_carries(model: ElmanRNN, examples: Examples):
    """Hidden states after every step (N, T, H) and carries out of every step (N, T)."""
    states = model.eval().hidden_states(examples.features)
    return states, carries_out(examples.features.long())


def fit_probe(states: torch.Tensor, carries: torch.Tensor) -> torch.nn.Linear:
    """Fit one logistic regression from hidden state (M, H) to carry bit (M,)."""
    probe = torch.nn.Linear(states.shape[1], 1)
    optimizer = torch.optim.LBFGS(
        probe.parameters(),
        max_iter=PROBE_STEPS,
        tolerance_change=1e-7,
        line_search_fn="strong_wolfe",
    )
    targets = carries.float()

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            probe(states).squeeze(1), targets
        )
        loss = loss + PROBE_L2 * probe.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def probe_accuracy(model: ElmanRNN, fit_on: Examples, test_on: Examples) -> dict:
    """Fit the probe on one split's states and score it per time step on another."""
    fit_states, fit_carries = hidden_and_carries(model, fit_on)
    probe = fit_probe(fit_states.flatten(0, 1), fit_carries.flatten())
    test_states, test_carries = hidden_and_carries(model, test_on)
    with torch.no_grad():
        read = probe(test_states).squeeze(-1) > 0
    per_step = (read == test_carries.bool()).float().mean(dim=0)
    return {"per_step": per_step.tolist(), "overall": per_step.mean().item()}
