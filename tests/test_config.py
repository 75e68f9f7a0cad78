"""The training configuration and the seed grammar, against reference models."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carrydemo import cli
from carrydemo.config import MAX_SEEDS_PER_RUN, ConfigError, TrainConfig, parse_seeds

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


def reference_seeds(text: str):
    """The seed grammar written out plainly; None where it must be refused.

    seeds = item ("," item)* ; item = digits ["-" digits], blanks around it.
    """
    seeds = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*([0-9]+)(?:-([0-9]+))?\s*", item)
        if match is None:
            return None
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last < first or len(seeds) + last - first + 1 > MAX_SEEDS_PER_RUN:
            return None
        seeds.extend(range(first, last + 1))
    return tuple(seeds) if len(set(seeds)) == len(seeds) else None


def check_against_reference(text: str) -> None:
    expected = reference_seeds(text)
    if expected is None:
        with pytest.raises(ConfigError):
            parse_seeds(text)
    else:
        assert parse_seeds(text) == expected


blank = st.sampled_from(["", " ", "  ", "\t"])
number = st.integers(0, 50).map(str) | st.sampled_from(["007", "2147483647"])
item = st.one_of(
    st.tuples(blank, number, blank).map("".join),
    st.tuples(blank, number, st.just("-"), number, blank).map("".join),
)
seed_lists = st.lists(item, min_size=1, max_size=6).map(",".join)
seed_like = st.text(alphabet="0123456789-, \t\u00b2\u0663x.", max_size=20)


@PROPERTY_SETTINGS
@given(seed_lists)
def test_parse_seeds_follows_the_grammar_on_well_formed_lists(text):
    check_against_reference(text)


@PROPERTY_SETTINGS
@given(seed_like | st.text(max_size=20))
def test_parse_seeds_refuses_garbage_only_with_config_error(text):
    check_against_reference(text)


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("3", (3,)),
        ("0-9", tuple(range(10))),
        ("0,3,7", (0, 3, 7)),
        ("0-2,9", (0, 1, 2, 9)),
    ],
)
def test_parse_seeds_examples_of_the_help_text(text, seeds):
    assert parse_seeds(text) == seeds


options = st.sampled_from(
    [
        "--seeds",
        "--epochs",
        "--lr",
        "--model",
        "--device",
        "--batch-size",
        "--threads",
        "--loss-threshold",
        "--num-digits",
        "--out",
        "--jobs",
    ]
)


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(options, st.text(max_size=12)), max_size=4))
def test_command_line_garbage_raises_nothing_but_usage_errors(pairs):
    argv = ["train"] + [part for pair in pairs for part in pair]
    parser = cli.build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as error:
        assert error.code == 2
        return
    try:
        cli.check_train_arguments(args)
    except ConfigError as error:
        assert "\n" not in str(error)


def test_the_defaults_are_the_articles():
    config = TrainConfig()
    assert (config.epochs, config.lr, config.loss_threshold) == (20_000, 1e-4, 1e-3)
    assert config.models == ("mlp", "rnn") and config.seeds == tuple(range(10))
    assert TrainConfig().to_dict()["seeds"] == list(range(10))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"models": ()}, "models"),
        ({"models": ("cnn",)}, "'cnn'"),
        ({"seeds": ()}, "seeds"),
        ({"seeds": (-1,)}, "seed -1"),
        ({"seeds": (2**31,)}, f"seed {2**31}"),
        ({"epochs": True}, "epochs=True"),
        ({"epochs": 2.0}, "epochs=2.0"),
        ({"epochs": "3"}, "epochs='3'"),
        ({"hidden_size": 0}, "hidden_size=0"),
        ({"lr": "0.1"}, "lr='0.1'"),
        ({"lr": math.nan}, "lr=nan"),
        ({"lr": -math.inf}, "lr=-inf"),
        ({"loss_threshold": -0.5}, "loss_threshold=-0.5"),
        ({"device": "gpu"}, "'gpu'"),
        ({"threads": 0}, "threads=0"),
    ],
)
def test_every_bad_setting_is_refused_by_name(change, named):
    with pytest.raises(ConfigError) as error:
        dataclasses.replace(TrainConfig(), **change)
    assert named in str(error.value)
    assert "\n" not in str(error.value)
