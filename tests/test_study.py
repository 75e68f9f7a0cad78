"""Tests of the study: the hand-built RNN, exhaustive scoring, carry bookkeeping."""

from __future__ import annotations

import json
import logging
import random

import pytest
import torch

from carrydemo import exhaustive, study_site
from carrydemo.cli import main
from carrydemo.config import TrainConfig
from carrydemo.constructed import constructed_rnn
from carrydemo.data import (
    Examples,
    article_splits,
    examples_from_pairs,
    from_digits,
    make_examples,
)
from carrydemo.models import ElmanRNN, count_parameters
from carrydemo.probe import probe_accuracy
from carrydemo.stacked import StackedRun
from carrydemo.study import (
    AllPairs,
    balanced_examples,
    embed_state,
    rnn_from_state,
    seeds_section,
    shrink_state,
)
from carrydemo.train import seeded_model

STUDY_KEYS = {
    "seeds",
    "lr_sweep",
    "exhaustive",
    "length_generalization",
    "carry_probe",
    "constructed",
    "hidden_size_sweep",
    "recipe",
}


@pytest.fixture(scope="module")
def all_pairs():
    return exhaustive.all_pairs(3)


def decoded_sums(model, features) -> list[int]:
    """The sums a model writes, as integers."""
    predicted = model(features).argmax(-1)
    return [from_digits(row.tolist()) for row in predicted]


def numbers(features) -> list[tuple[int, int]]:
    a = [from_digits(row) for row in features[:, :, 0].long().tolist()]
    b = [from_digits(row) for row in features[:, :, 1].long().tolist()]
    return list(zip(a, b, strict=True))


# --- the constructed RNN ------------------------------------------------------


def test_constructed_rnn_is_the_article_module_with_42_parameters():
    model = constructed_rnn()
    assert isinstance(model, ElmanRNN)
    assert model.config.hidden_size == 2
    assert count_parameters(model) == 42


def test_constructed_rnn_adds_every_pair_of_3_digit_numbers(all_pairs):
    predicted = exhaustive.predict_all_pairs(constructed_rnn())
    assert torch.equal(predicted, all_pairs.labels)


def test_constructed_rnn_adds_random_100_digit_numbers():
    rng = random.Random(5)
    pairs = [(rng.randrange(10**100), rng.randrange(10**100)) for _ in range(200)]
    examples = examples_from_pairs(pairs, 100)
    sums = decoded_sums(constructed_rnn(), examples.features)
    assert sums == [(a + b) % 10**100 for a, b in pairs]


@pytest.mark.parametrize("num_digits", [1, 2, 3, 10, 100])
def test_constructed_rnn_carries_through_all_nines(num_digits):
    nines = 10**num_digits - 1
    pairs = [(nines, 1), (1, nines), (nines, nines), (nines - 1, 1), (0, 0)]
    examples = examples_from_pairs(pairs, num_digits)
    sums = decoded_sums(constructed_rnn(), examples.features)
    assert sums == [(a + b) % 10**num_digits for a, b in pairs]


def test_probe_reads_the_constructed_rnns_carry_perfectly():
    result = probe_accuracy(
        constructed_rnn(), make_examples(500, 3, 1), make_examples(500, 3, 2)
    )
    assert result["per_step"] == [1.0, 1.0, 1.0]


# --- exhaustive evaluation ----------------------------------------------------


def test_all_pairs_cover_every_pair_once_with_python_sums(all_pairs):
    place = 10 ** torch.arange(3)
    a = (all_pairs.features[:, :, 0].long() * place).sum(1)
    b = (all_pairs.features[:, :, 1].long() * place).sum(1)
    assert len(all_pairs) == 10**6
    assert (a * 1000 + b).unique().numel() == 10**6
    for index in random.Random(0).sample(range(10**6), 2000):
        expected = (a[index].item() + b[index].item()) % 1000
        assert from_digits(all_pairs.labels[index].tolist()) == expected


@pytest.mark.parametrize("name", ["rnn", "mlp"])
def test_predict_all_pairs_matches_the_models_own_forward(all_pairs, name):
    model = seeded_model(name, 3).eval()
    predicted = exhaustive.predict_all_pairs(model)
    index = torch.tensor(random.Random(1).sample(range(10**6), 5000))
    with torch.no_grad():
        direct = model(all_pairs.features[index]).argmax(-1)
    assert torch.equal(predicted[index], direct)


def test_score_counts_exact_matches_against_python_sums(all_pairs):
    model = seeded_model("rnn", 4).eval()
    predicted = exhaustive.predict_all_pairs(model)
    subset = torch.tensor(random.Random(2).sample(range(10**6), 3000))
    examples = Examples(all_pairs.features[subset], all_pairs.labels[subset])
    result = exhaustive.score(predicted[subset], examples)
    written = [from_digits(row.tolist()) for row in predicted[subset]]
    right = [
        w == (a + b) % 1000
        for w, (a, b) in zip(written, numbers(examples.features), strict=True)
    ]
    assert result["exact_match"] == pytest.approx(sum(right) / len(right))
    total = sum(group["examples"] for group in result["by_carries"].values())
    assert total == len(examples)


def python_carry_facts(a: int, b: int, num_digits: int) -> tuple[int, int]:
    """(carries into label digits, longest carry chain), the schoolbook way."""
    da, db = str(a).zfill(num_digits)[::-1], str(b).zfill(num_digits)[::-1]
    column = [int(x) + int(y) for x, y in zip(da, db, strict=True)]
    carry_in, carries_into = 0, []
    for t in range(num_digits):
        carry_out = int(column[t] + carry_in >= 10)
        carries_into.append(carry_out)
        carry_in = carry_out
    count = sum(carries_into[:-1])
    # a chain starts where a carry is made fresh (column >= 10) and runs on
    # through every following column that sums to exactly 9
    longest = 0
    for start in range(num_digits - 1):
        if column[start] >= 10:
            length, digit = 1, start + 1
            while column[digit] == 9 and digit + 1 < num_digits:
                length, digit = length + 1, digit + 1
            longest = max(longest, length)
    return count, longest


def test_carry_bookkeeping_matches_a_pure_python_oracle():
    rng = random.Random(3)
    pairs = [(rng.randrange(10**6), rng.randrange(10**6)) for _ in range(3000)]
    pairs += [(999999, 1), (55, 55), (0, 0), (95, 5), (990, 10)]
    examples = examples_from_pairs(pairs, 6)
    counts, chains = exhaustive.carry_groups(examples)
    expected = [python_carry_facts(a, b, 6) for a, b in pairs]
    assert list(zip(counts.tolist(), chains.tolist(), strict=True)) == expected


def test_carry_bookkeeping_of_worked_examples():
    examples = examples_from_pairs([(999, 1), (55, 55), (438, 540)], 3)
    counts, chains = exhaustive.carry_groups(examples)
    assert counts.tolist() == [2, 2, 0]
    assert chains.tolist() == [2, 1, 0]


# --- training helpers ---------------------------------------------------------


def test_padded_rnn_trains_exactly_like_the_small_one():
    small = seeded_model("rnn", 7, hidden_size=3).state_dict()
    padded = embed_state(small, 21)
    features = make_examples(50, 5, 0).features
    with torch.no_grad():
        same = rnn_from_state(padded)(features), rnn_from_state(small)(features)
    assert torch.allclose(*same, atol=1e-6)

    # the zero units stay zero under the stacked trainer's Adam
    config = TrainConfig(models=("rnn",), epochs=3, hidden_size=21, device="cpu")
    run = StackedRun("rnn", [7], [1e-2], config, article_splits(), torch.device("cpu"))
    with torch.no_grad():
        run.stack.params[0] = run.network.to_flat(padded)
    run.train()
    trained = run.results()[0].state
    assert torch.equal(
        embed_state(shrink_state(trained, 3), 21)["rnn.weight_hh_l0"],
        trained["rnn.weight_hh_l0"],
    )
    assert torch.equal(trained["output.weight"][:, 3:], torch.zeros(10, 18))


def test_balanced_examples_spread_column_sums_evenly_with_right_labels():
    examples = balanced_examples(20_000, 3, seed=0)
    digits = examples.features.long()
    assert digits.min() >= 0 and digits.max() <= 9
    counts = torch.bincount((digits[:, :, 0] + digits[:, :, 1]).flatten(), minlength=19)
    assert counts.shape[0] == 19
    assert counts.min() > 0.8 * counts.float().mean()
    sums = [(a + b) % 1000 for a, b in numbers(examples.features[:500])]
    assert [from_digits(row) for row in examples.labels[:500].tolist()] == sums


def test_study_pages_without_results_say_which_command_makes_them(
    tmp_path, monkeypatch
):
    class Page:
        meta = {"requires": "study", "title": "The limit"}
        title = "The limit"

    monkeypatch.setenv("CARRYDEMO_RESULTS", str(tmp_path))
    page = "{{ value: study.x | raw }}"
    shown = study_site.on_page_markdown(page, Page, {}, [])
    assert "nox -s study" in shown and "{{" not in shown
    (tmp_path / "study.json").write_text("{}")
    assert study_site.on_page_markdown(page, Page, {}, []) == page


# --- the command --------------------------------------------------------------


def test_seeds_section_reads_every_seed_of_a_training_run(tmp_path):
    train = ["train", "--epochs", "2", "--seeds", "0-1", "--jobs", "1"]
    assert main([*train, "--out", str(tmp_path)]) == 0
    section = seeds_section(tmp_path, AllPairs())
    assert section["available"] is True
    for name, model in section["models"].items():
        assert model["seeds"] == [0, 1]
        assert model["seeds_above_article"] + model["seeds_at_or_below_article"] == 2
        assert 0 <= model["exhaustive_exact_match"]["mean"] <= 1, name


def test_quick_study_writes_every_section(tmp_path, caplog):
    # without trained models it runs, saying at once what it leaves out
    with caplog.at_level(logging.WARNING, logger="carrydemo"):
        assert main(["study", "--quick", "--results", str(tmp_path)]) == 0
    assert "nox -s train" in caplog.text and "seeds section" in caplog.text
    study = json.loads((tmp_path / "study.json").read_text())
    assert set(study) >= STUDY_KEYS
    assert study["seeds"]["available"] is False
    assert study["constructed"]["exhaustive"]["exact_match"] == 1.0
