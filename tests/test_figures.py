"""Tests of the figure registry and ``python -m carrydemo figures``."""

from __future__ import annotations

import json
import re

from carrydemo import cli
from carrydemo.data import examples_from_pairs, to_digits
from carrydemo.figures import (
    FIGURES,
    TABLES,
    benchmark,
    fingerprint,
    load_context,
    write_figures,
)
from carrydemo.models import predict
from carrydemo.results import load_trained_model


def test_every_registered_name_is_written(figures):
    index = json.loads((figures / "index.json").read_text())
    assert sorted(index["figures"]) == sorted(FIGURES)
    assert sorted(index["tables"]) == sorted(TABLES)
    for name in ("learning_curves_mlp", "learning_curves_rnn"):
        for suffix in ("plotly.json", "light.svg", "dark.svg"):
            assert (figures / f"{name}.{suffix}").exists()
    assert (figures / "unrolled_rnn.dark.svg").exists()


def test_two_runs_give_identical_bytes(results, figures, tmp_path):
    again = tmp_path / "again"
    write_figures(results, again)
    assert fingerprint(again) == fingerprint(figures)


def test_svg_has_no_date_and_light_differs_from_dark(figures):
    light = (figures / "unrolled_rnn.light.svg").read_text()
    dark = (figures / "unrolled_rnn.dark.svg").read_text()
    assert "<dc:date>" not in light
    assert light != dark


def prediction_rows(figures):
    table = json.loads((figures / "predictions.table.json").read_text())
    return table["columns"], table["rows"]


def test_correct_sum_is_pythons_sum(figures):
    columns, rows = prediction_rows(figures)
    assert len(rows) == 10
    for row in rows:
        a, b = map(int, re.fullmatch(r"(\d+) \+ (\d+)", row[2]).groups())
        assert int(row[columns.index("correct sum")]) == a + b
    assert [row[2] for row in rows[:6]] == [
        "334 + 135",
        "384 + 297",
        "8 + 748",
        "313 + 488",
        "226 + 591",
        "334 + 185",
    ]


def test_wrong_digits_are_marked_exactly_where_prediction_differs(results, figures):
    columns, rows = prediction_rows(figures)
    pairs = [tuple(map(int, row[2].split(" + "))) for row in rows]
    features = examples_from_pairs(pairs, 3).features
    for model in ("mlp", "rnn"):
        predicted = predict(load_trained_model(results, model), features)
        column = columns.index(f"{model.upper()} predicted")
        for row, (a, b), digits in zip(rows, pairs, predicted, strict=True):
            cell = row[column]
            shown = [int(d) for d in cell["digits"]]
            expected = to_digits(a + b, 3)[::-1]  # most significant first
            assert shown == digits.tolist()[::-1]
            assert cell["wrong"] == [
                s != e for s, e in zip(shown, expected, strict=True)
            ]


def test_figures_without_results_fails_naming_train(tmp_path, capsys):
    out = tmp_path / "figures"
    arguments = ["figures", "--results", str(tmp_path / "none"), "--out", str(out)]
    assert cli.main(arguments) == 2
    stderr = capsys.readouterr().err
    assert "nox -s train" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_benchmark_rows_become_a_table(results):
    context = load_context(results)
    context.bench = {"rows": [{"trainer": "plain", "s": 2.5}, {"trainer": "stacked"}]}
    made = benchmark(context)
    assert made.columns == ["trainer", "s"]
    assert made.rows == [["plain", "2.5"], ["stacked", ""]]
