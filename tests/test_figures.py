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


def test_benchmark_table_has_a_row_per_engine(results):
    context = load_context(results)
    measured = {
        "model_epochs_per_s": 1500.0,
        "speedup": 30.0,
        "model_epochs_per_cpu_s": 1600.0,
        "speedup_cpu": 32.0,
        "fraction_of_bound": 0.1,
    }
    plain = dict(measured, model_epochs_per_s=50.0, speedup=1.0, speedup_cpu=1.0)
    context.bench = {
        "model": "rnn",
        "epochs": 30,
        "batch_size": 32,
        "repeats": 3,
        "threads": 1,
        "device": "cpu",
        "device_name": "x86_64",
        "cpu_count": 2,
        "load_average": [0.5, 0.4, 0.3],
        "torch": "2.13.0",
        "flops_per_model_epoch": 6.2e6,
        "matmul_gflops": 80.0,
        "bound_model_epochs_per_s": 12900.0,
        "max_abs_weight_difference": 3e-8,
        "plain": plain,
        "stacked": [
            dict(measured, members=10, kernel="c"),
            dict(measured, members=10, kernel="tensor"),
            dict(measured, members=50, kernel="c"),
        ],
    }
    made = benchmark(context)
    assert [row[:2] for row in made.rows] == [
        ["plain loop", "1 at a time"],
        ["stacked, C kernel", "10"],
        ["stacked, tensor operations", "10"],
        ["stacked, C kernel", "50"],
    ]
    assert made.rows[1][2:4] == ["1,500", "30.0×"]
    assert "6.2 MFLOP" in made.note and "3.0e-08" in made.note
