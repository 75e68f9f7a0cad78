"""A 42-parameter Elman RNN whose weights are set by hand so that it adds exactly.

It is the article's RNN with 2 hidden units instead of 21, loaded into the same
``ElmanRNN`` module. Write c for the carry into step t (0 or 1) and
u = a_t + b_t + c for the column sum (0..19). The two units are:

- the carry unit, a steep tanh of (u - 9.75): +1 when the column carries
  (u >= 10), -1 when it does not. The next step reads the carry back as
  c = (h + 1) / 2.
- the sum unit, a shallow tanh of (u - 9.75): small enough to stay within
  0.04 of linear, so the output layer can read u back from it.

The output digit is u - 10 * (carry out), a linear function z of the two
units. Each class k gets the logit k * z - k**2 / 2, which is -(z - k)**2 / 2
up to a term that is equal for all classes, so the winning class is the k
nearest to z.

The hidden state starts at zero, which the carry unit reads as c = 1/2. The
thresholds are set a quarter off the integers so that this half carry counts
as none: 9.75 for the carry, and z is shifted down by a quarter, so z is d - 1/4
after a real carry or none and d + 1/4 at the first step; both round to d.
"""

from __future__ import annotations

import torch

from carrydemo.models import ElmanRNN, RNNConfig

CARRY_GAIN = 40.0  # tanh(40 * 0.25) is 1 - 4e-9: the carry unit is a step
SUM_GAIN = 0.01  # tanh is within 4e-4 of linear on +-0.1025
LOGIT_SCALE = 10.0  # sharpens the log-probabilities; the argmax does not change
THRESHOLD = 9.75  # a column carries when u >= 10, and u = 9.5 at step 0 does not


def constructed_rnn() -> ElmanRNN:
    """Return the hand-built 2-unit RNN (unit 0: column sum, unit 1: carry)."""
    model = ElmanRNN(RNNConfig(hidden_size=2))
    # both units see a + b + c - 9.75 with c = (h_carry + 1) / 2
    gains = torch.tensor([SUM_GAIN, CARRY_GAIN])
    offset = 0.5 - THRESHOLD
    weights = {
        "rnn.weight_ih_l0": gains[:, None] * torch.ones(2, 2),
        "rnn.weight_hh_l0": torch.stack([torch.zeros(2), 0.5 * gains], dim=1),
        "rnn.bias_ih_l0": gains * offset,
        "rnn.bias_hh_l0": torch.zeros(2),
        **output_weights(),
    }
    model.load_state_dict(weights)
    return model.eval()


def output_weights() -> dict:
    """Logit k * z - k**2 / 2 per class k, with z the output digit as read from h.

    z = u - 10 * carry_out - 1/4, where u = h_sum / SUM_GAIN + 9.75 and
    carry_out = (h_carry + 1) / 2, which gives z = h_sum / SUM_GAIN
    - 5 * h_carry + 4.5.
    """
    k = torch.arange(10, dtype=torch.float32)
    z_weights = torch.tensor([1 / SUM_GAIN, -5.0])
    z_bias = THRESHOLD - 5.0 - 0.25
    return {
        "output.weight": LOGIT_SCALE * k[:, None] * z_weights[None, :],
        "output.bias": LOGIT_SCALE * (k * z_bias - k**2 / 2),
    }
