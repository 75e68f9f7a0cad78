"""Addition examples in the article's format: digit pairs, units first.

One example adds two T-digit numbers a and b (T = ``num_digits``, 3 in the
article). It is a sequence of T time steps; step t holds the pair
(digit t of a, digit t of b), counting from the units. The label is the T
digits of the sum in the same order, so a sum with T + 1 digits loses its top
digit: the label encodes (a + b) mod 10**T.

Worked example, T = 3, a = 438, b = 540::

    features  [[8, 0], [3, 4], [4, 5]]   units, tens, hundreds
    label     [8, 7, 9]                  978 = 438 + 540, units first

Units come first because that is the order in which a carry travels: the
carry out of step t is an input to step t + 1, so a network that reads the
sequence left to right has seen everything a digit depends on by the time it
has to write it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from carrydemo.config import DATA_SEED

ARTICLE_NUM_EXAMPLES = 1000
ARTICLE_SPLIT = (500, 100, 400)  # training, validation, test; taken in order


def to_digits(number: int, num_digits: int) -> list[int]:
    """Return the lowest ``num_digits`` decimal digits of ``number``, units first."""
    if number < 0:
        raise ValueError(f"number must be non-negative, got {number}")
    return [(number // 10**t) % 10 for t in range(num_digits)]


def from_digits(digits) -> int:
    """Return the number whose decimal digits, units first, are ``digits``."""
    return sum(int(d) * 10**t for t, d in enumerate(digits))


def encode_pair(a: int, b: int, num_digits: int) -> tuple[list, list]:
    """Return (features, label) for ``a + b`` as nested lists of digits."""
    for name, value in (("a", a), ("b", b)):
        if not 0 <= value < 10**num_digits:
            raise ValueError(f"{name}={value} does not fit in {num_digits} digits")
    digits_a, digits_b = to_digits(a, num_digits), to_digits(b, num_digits)
    features = [[da, db] for da, db in zip(digits_a, digits_b, strict=True)]
    label = to_digits(a + b, num_digits)
    return features, label


def decode_features(features) -> tuple[int, int]:
    """Return the two numbers (a, b) that one example's features encode."""
    a = from_digits(int(step[0]) for step in features)
    b = from_digits(int(step[1]) for step in features)
    return a, b


@dataclass(frozen=True)
class Examples:
    """A batch of examples: features (N, T, 2) float32, labels (N, T) int64."""

    features: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def num_digits(self) -> int:
        return self.features.shape[1]

    def take(self, start: int, stop: int) -> Examples:
        return Examples(self.features[start:stop], self.labels[start:stop])

    def to(self, device) -> Examples:
        return Examples(self.features.to(device), self.labels.to(device))


def labels_for(features: torch.Tensor) -> torch.Tensor:
    """Return the label digits for digit-pair features of shape (N, T, 2).

    The sum is done digit by digit with an explicit carry, the schoolbook way,
    so it works for any T without building integers that overflow int64.
    """
    digits = features.long()
    labels = torch.empty(digits.shape[:2], dtype=torch.long)
    carry = torch.zeros(digits.shape[0], dtype=torch.long)
    for t in range(digits.shape[1]):
        column = digits[:, t, 0] + digits[:, t, 1] + carry
        labels[:, t] = column % 10
        carry = column // 10
    return labels


def make_examples(num_examples: int, num_digits: int, seed: int) -> Examples:
    """Draw ``num_examples`` sums with every digit uniform on 0..9."""
    generator = torch.Generator().manual_seed(seed)
    digits = torch.randint(0, 10, (num_examples, num_digits, 2), generator=generator)
    return Examples(digits.float(), labels_for(digits))


def examples_from_pairs(pairs, num_digits: int) -> Examples:
    """Encode explicit (a, b) pairs, for tables and tests."""
    encoded = [encode_pair(a, b, num_digits) for a, b in pairs]
    features = torch.tensor([f for f, _ in encoded], dtype=torch.float32)
    labels = torch.tensor([label for _, label in encoded], dtype=torch.long)
    return Examples(features.reshape(len(encoded), num_digits, 2), labels)


@dataclass(frozen=True)
class Splits:
    """The training, validation and test splits of one dataset."""

    train: Examples
    validation: Examples
    test: Examples


def article_splits(num_digits: int = 3, seed: int = DATA_SEED) -> Splits:
    """Return the article's 1,000 examples split 500/100/400, in order."""
    examples = make_examples(ARTICLE_NUM_EXAMPLES, num_digits, seed)
    n_train, n_validation, _ = ARTICLE_SPLIT
    return Splits(
        train=examples.take(0, n_train),
        validation=examples.take(n_train, n_train + n_validation),
        test=examples.take(n_train + n_validation, ARTICLE_NUM_EXAMPLES),
    )
