"""Tests of the docs hook: placeholders, and the train -> figures -> site path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mkdocs.commands import build as mkdocs_build_command
from mkdocs.config import load_config
from mkdocs.exceptions import Abort, PluginError

from carrydemo.site import (
    Build,
    format_value,
    load_build,
    math_to_mathml,
    substitute,
)

ROOT = Path(__file__).resolve().parents[1]


def mkdocs_build(config: Path, site: Path, results: Path, figures: Path):
    """Run ``mkdocs build --strict`` in a subprocess, reading the given folders."""
    env = dict(os.environ, CARRYDEMO_RESULTS=str(results))
    env.update(CARRYDEMO_FIGURES=str(figures), NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    command = [sys.executable, "-m", "mkdocs", "build", "--strict"]
    command += ["-f", str(config), "-d", str(site)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)


def small_site(tmp_path: Path, page: str) -> Path:
    """A one-page site that uses the hook, to test its errors quickly."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(f"# Test\n\n{page}\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        f"site_name: test\ndocs_dir: {tmp_path / 'docs'}\n"
        f"hooks:\n  - {ROOT / 'carrydemo' / 'site.py'}\n"
    )
    return config


@pytest.mark.slow
def test_site_shows_the_rnn_accuracy_of_the_run(results, figures, tmp_path):
    site = tmp_path / "site"
    done = mkdocs_build(ROOT / "mkdocs.yml", site, results, figures)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((results / "metrics.json").read_text())
    accuracy = f"{metrics['models']['rnn']['test_accuracy']:.2%}"
    home = (site / "index.html").read_text()
    assert accuracy in home
    assert "{{" not in home
    # figures and plotly.js are served by the site itself
    assert (site / "assets" / "javascripts" / "plotly.min.js").exists()
    assert (site / "assets" / "figures" / "learning_curves_rnn.plotly.json").exists()
    models = (site / "models" / "index.html").read_text()
    assert "<math" in models
    # code is included from the package, not left as a snippet line
    assert "ElmanRNN</span>" in models and "8&lt;" not in models


def build_in_process(config: Path, site: Path, results, figures, monkeypatch):
    """Build a small site in this process (no interpreter start, no re-imports)."""
    monkeypatch.setenv("CARRYDEMO_RESULTS", str(results))
    monkeypatch.setenv("CARRYDEMO_FIGURES", str(figures))
    mkdocs_build_command.build(
        load_config(str(config), strict=True, site_dir=str(site))
    )


def test_unknown_placeholder_fails_listing_known_names(
    results, figures, tmp_path, monkeypatch, caplog
):
    config = small_site(tmp_path, "{{ figure: no_such_figure }}")
    with pytest.raises(Abort, match="strict mode"):
        build_in_process(config, tmp_path / "site", results, figures, monkeypatch)
    assert "no figure named 'no_such_figure'" in caplog.text
    assert "known figures: learning_curves_mlp, learning_curves_rnn" in caplog.text


def test_build_without_results_names_the_train_command(
    figures, tmp_path, monkeypatch, caplog
):
    config = small_site(tmp_path, "nothing")
    # mkdocs either lets the hook's error through or logs it and aborts
    with pytest.raises((Abort, PluginError)) as stopped:
        build_in_process(
            config, tmp_path / "site", tmp_path / "none", figures, monkeypatch
        )
    assert "run `nox -s train`" in str(stopped.value) + caplog.text


@pytest.fixture
def build(results, figures) -> Build:
    metrics = json.loads((results / "metrics.json").read_text())
    index = json.loads((figures / "index.json").read_text())
    return Build(results, figures, index, {"metrics": metrics})


def test_values_are_read_and_formatted(build):
    text = "{{ value: metrics.models.rnn.parameters | int }} and "
    text += "{{ value: metrics.config.lr|raw }}"
    assert substitute(text, build, "results/") == ("745 and 0.0001", [])


def test_placeholders_in_code_are_left_alone(build):
    text = "`{{ value: metrics.nope }}`\n\n```\n{{ table: nope }}\n```\n"
    assert substitute(text, build, "") == (text, [])


def test_unknown_path_lists_the_keys_that_exist(build):
    _, problems = substitute("{{ value: metrics.models.cnn.x }}", build, "")
    assert "metrics.models has no 'cnn'; it has: mlp, rnn" in problems[0]


def test_missing_optional_source_names_its_command(build):
    _, problems = substitute("{{ value: study.best | percent }}", build, "")
    assert "nox -s study" in problems[0]


def test_benchmark_table_without_bench_says_how_to_make_it(build):
    text, problems = substitute("{{ table: benchmark }}", build, "")
    assert problems == []
    assert "nox -s bench" in text


@pytest.mark.parametrize(
    ("value", "style", "expected"),
    [
        (0.7625, "percent", "76.25%"),
        (0.0025, "percent", "0.25%"),
        (20000, "int", "20,000"),
        (3.14159, "float2", "3.14"),
        (47.2234, "seconds", "47.2 s"),
        ([0, 1, 2], "raw", "0, 1, 2"),
    ],
)
def test_format_value(value, style, expected):
    assert format_value(value, style) == expected


def test_math_becomes_mathml():
    page = '<p><span class="arithmatex">\\(h_t &lt; 1\\)</span></p>'
    converted = math_to_mathml(page)
    assert "<math" in converted and "arithmatex" not in converted
    assert "<mo>&#x0003C;</mo>" in converted  # the escaped < survives as MathML


def test_figures_older_than_the_results_stop_the_build(
    results, figures, tmp_path, monkeypatch
):
    copied = tmp_path / "results"
    shutil.copytree(results, copied)
    (copied / "bench.json").write_text('{"rows": []}\n')
    monkeypatch.setenv("CARRYDEMO_RESULTS", str(copied))
    monkeypatch.setenv("CARRYDEMO_FIGURES", str(figures))
    with pytest.raises(PluginError, match="python -m carrydemo figures"):
        load_build()
