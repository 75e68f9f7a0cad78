"""The digit encoding against the article's rows and Python's own addition."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from carrydemo.data import (
    ARTICLE_SPLIT,
    article_splits,
    decode_features,
    encode_pair,
    examples_from_pairs,
    from_digits,
    labels_for,
    make_examples,
    to_digits,
)

# The article's first three examples: (a, b, features, label).
ARTICLE_ROWS = [
    (438, 540, [[8, 0], [3, 4], [4, 5]], [8, 7, 9]),
    (33, 453, [[3, 3], [3, 5], [0, 4]], [6, 8, 4]),
    (955, 397, [[5, 7], [5, 9], [9, 3]], [2, 5, 3]),
]


@pytest.mark.parametrize(("a", "b", "features", "label"), ARTICLE_ROWS)
def test_encode_pair_matches_the_article(a, b, features, label):
    assert encode_pair(a, b, 3) == (features, label)
    assert decode_features(features) == (a, b)
    assert from_digits(label) == (a + b) % 1000


def test_examples_from_pairs_matches_the_article():
    examples = examples_from_pairs([(a, b) for a, b, _, _ in ARTICLE_ROWS], 3)
    assert examples.features.dtype == torch.float32
    assert examples.labels.dtype == torch.int64
    assert examples.features.tolist() == [row[2] for row in ARTICLE_ROWS]
    assert examples.labels.tolist() == [row[3] for row in ARTICLE_ROWS]


@pytest.mark.parametrize("num_digits", [1, 2, 3, 5, 8, 25])
def test_labels_are_the_sum_modulo_10_to_the_t(num_digits):
    rng = random.Random(num_digits)
    pairs = [
        (rng.randrange(10**num_digits), rng.randrange(10**num_digits))
        for _ in range(200)
    ]
    examples = examples_from_pairs(pairs, num_digits)
    assert examples.features.shape == (200, num_digits, 2)
    for (a, b), features, label in zip(
        pairs, examples.features, labels_for(examples.features), strict=True
    ):
        assert decode_features(features.tolist()) == (a, b)
        assert from_digits(label.tolist()) == (a + b) % 10**num_digits


@pytest.mark.parametrize("num_digits", [1, 3, 6])
def test_drawn_examples_are_labelled_with_their_sum(num_digits):
    examples = make_examples(300, num_digits, seed=7)
    assert examples.features.shape == (300, num_digits, 2)
    assert examples.labels.shape == (300, num_digits)
    for features, label in zip(examples.features, examples.labels, strict=True):
        a, b = decode_features(features.tolist())
        assert from_digits(label.tolist()) == (a + b) % 10**num_digits


def test_to_digits_keeps_the_lowest_digits_units_first():
    assert to_digits(1352, 3) == [2, 5, 3]
    assert to_digits(7, 4) == [7, 0, 0, 0]
    with pytest.raises(ValueError, match="non-negative"):
        to_digits(-1, 3)


@pytest.mark.parametrize(("a", "b"), [(1000, 0), (0, 1000), (-1, 5)])
def test_encode_pair_refuses_numbers_that_do_not_fit(a, b):
    with pytest.raises(ValueError, match="does not fit in 3 digits"):
        encode_pair(a, b, 3)


def test_article_splits_are_500_100_400_in_order():
    splits = article_splits()
    sizes = (len(splits.train), len(splits.validation), len(splits.test))
    assert sizes == ARTICLE_SPLIT == (500, 100, 400)
    everything = make_examples(1000, 3, seed=article_splits.__defaults__[1])
    joined = torch.cat(
        [splits.train.features, splits.validation.features, splits.test.features]
    )
    assert torch.equal(joined, everything.features)


def test_same_data_seed_gives_the_same_split_and_another_does_not():
    first, second, other = article_splits(), article_splits(), article_splits(seed=1)
    for name in ("train", "validation", "test"):
        assert torch.equal(
            getattr(first, name).features, getattr(second, name).features
        )
        assert torch.equal(getattr(first, name).labels, getattr(second, name).labels)
    assert not torch.equal(first.test.features, other.test.features)


def test_the_split_does_not_depend_on_the_global_torch_seed():
    torch.manual_seed(1)
    first = article_splits()
    torch.manual_seed(2)
    assert torch.equal(first.train.features, article_splits().train.features)


# Properties for any number of digits, against Python's own integers.
digit_counts = st.integers(1, 40)


@st.composite
def sums(draw):
    num_digits = draw(digit_counts)
    a = draw(st.integers(0, 10**num_digits - 1))
    b = draw(st.integers(0, 10**num_digits - 1))
    return a, b, num_digits


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=10**60), digit_counts)
def test_digits_round_trip_modulo_10_to_the_t(number, num_digits):
    digits = to_digits(number, num_digits)
    assert len(digits) == num_digits and all(0 <= d <= 9 for d in digits)
    assert from_digits(digits) == number % 10**num_digits


@settings(max_examples=300, deadline=None)
@given(sums())
def test_encode_and_decode_agree_with_python_addition(case):
    a, b, num_digits = case
    features, label = encode_pair(a, b, num_digits)
    assert len(features) == len(label) == num_digits
    assert decode_features(features) == (a, b)
    assert from_digits(label) == (a + b) % 10**num_digits
    assert [step[0] for step in features] == to_digits(a, num_digits)


@settings(max_examples=100, deadline=None)
@given(st.lists(sums(), min_size=1, max_size=5), digit_counts)
def test_labels_for_agrees_with_python_addition(cases, num_digits):
    pairs = [(a % 10**num_digits, b % 10**num_digits) for a, b, _ in cases]
    examples = examples_from_pairs(pairs, num_digits)
    labels = labels_for(examples.features)
    assert torch.equal(labels, examples.labels)
    for (a, b), label in zip(pairs, labels.tolist(), strict=True):
        assert from_digits(label) == (a + b) % 10**num_digits
