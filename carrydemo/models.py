"""The article's two models: a 770-parameter MLP and a 745-parameter Elman RNN.

Both map digit-pair features of shape (batch, num_digits, 2) to log-
probabilities of shape (batch, num_digits, 10): one distribution over the ten
digits for every digit of the sum, units first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from carrydemo.config import MODEL_NAMES

NUM_CLASSES = 10  # decimal digits
FEATURE_SIZE = 2  # one digit of a and one digit of b per time step


@dataclass(frozen=True)
class MLPConfig:
    num_digits: int = 3
    hidden_size: int = 20


@dataclass(frozen=True)
class RNNConfig:
    hidden_size: int = 21


# --8<-- [start:mlp]
class MLP(nn.Module):
    """Linear(6 -> 20), ReLU, Linear(20 -> 30), log-softmax per digit.

    The article does not name its nonlinearity. We use ReLU, the default
    choice of the frameworks and tutorials of that time; the study pages show
    that the MLP's result depends on the learning rate far more than on this.
    The MLP sees all digits at once, flattened, so it only takes inputs of
    exactly ``num_digits`` digits.
    """

    def __init__(self, config: MLPConfig = MLPConfig()):
        super().__init__()
        self.config = config
        num_inputs = config.num_digits * FEATURE_SIZE
        self.hidden = nn.Linear(num_inputs, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.num_digits * NUM_CLASSES)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch_size, num_digits, _ = features.shape
        if num_digits != self.config.num_digits:
            expected = self.config.num_digits
            raise ValueError(
                f"this MLP takes {expected}-digit inputs, got {num_digits}"
            )
        hidden = torch.relu(self.hidden(features.reshape(batch_size, -1)))
        # (batch, num_digits * 10) -> (batch, num_digits, 10)
        logits = self.output(hidden).reshape(batch_size, num_digits, NUM_CLASSES)
        return torch.log_softmax(logits, dim=-1)


# --8<-- [end:mlp]


# --8<-- [start:rnn]
class ElmanRNN(nn.Module):
    """One tanh recurrent layer (input 2, hidden 21), Linear(21 -> 10) per step.

    The hidden state starts at zero for every sequence and carries whatever
    the network needs from one digit to the next: for addition, the carry.
    Because the same weights apply at every step, the RNN takes numbers of any
    length.
    """

    def __init__(self, config: RNNConfig = RNNConfig()):
        super().__init__()
        self.config = config
        self.rnn = nn.RNN(FEATURE_SIZE, config.hidden_size, batch_first=True)
        self.output = nn.Linear(config.hidden_size, NUM_CLASSES)

    def init_hidden(self, batch_size: int, device=None) -> torch.Tensor:
        """Return the zero initial state, shaped (layers=1, batch, hidden)."""
        return torch.zeros(1, batch_size, self.config.hidden_size, device=device)

    def hidden_states(self, features: torch.Tensor) -> torch.Tensor:
        """Return the hidden state after every step, shaped (batch, T, hidden)."""
        initial = self.init_hidden(features.shape[0], device=features.device)
        states, _ = self.rnn(features, initial)
        return states

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.output(self.hidden_states(features))
        return torch.log_softmax(logits, dim=-1)


# --8<-- [end:rnn]


def build_model(
    name: str, num_digits: int = 3, hidden_size: int | None = None
) -> nn.Module:
    """Return a freshly initialised model by name, with the article's sizes."""
    if name == "mlp":
        return MLP(MLPConfig(num_digits=num_digits, hidden_size=hidden_size or 20))
    if name == "rnn":
        return ElmanRNN(RNNConfig(hidden_size=hidden_size or 21))
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def predict(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Return predicted digit classes, shaped (batch, T), units first."""
    return model(features).argmax(dim=-1)


def exact_match_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the fraction of examples whose every digit is right."""
    if predicted.shape != labels.shape:
        raise ValueError(
            f"shapes differ: {tuple(predicted.shape)} vs {tuple(labels.shape)}"
        )
    if predicted.shape[0] == 0:
        raise ValueError("exact-match accuracy of zero examples is undefined")
    return (predicted == labels).all(dim=1).float().mean().item()
