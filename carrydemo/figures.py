"""The site's figures and tables, from the results: ``python -m carrydemo figures``.

Every figure and table the site shows is a function registered here, so the
docs hook can list what exists and a page can name it with a placeholder.

How to register a figure (for example in ``carrydemo/study_figures.py``)::

    from carrydemo.figures import FigureContext, figure, table

    @figure("study_lr")  # the page writes {{ figure: study_lr }}
    def study_lr(context: FigureContext):
        study = context.require("study")  # missing: names `nox -s study`
        ...
        return plotly_figure, matplotlib_figure  # either one alone is fine too

The function is called once per theme (``context.theme`` is "light", then
"dark"); draw the matplotlib figure with ``context.style`` (its colours) and a
transparent background. The Plotly figure is kept from the light call only:
the site restyles it for the dark scheme in the browser, so leave its colours
to ``plotly_layout()``.

How to register a table::

    @table("study_summary")  # the page writes {{ table: study_summary }}
    def study_summary(context: FigureContext) -> Table:
        return Table(columns=["setting", "accuracy"], rows=[["lr 1e-4", "76.25%"]])

A cell is a string or number, or ``marked_digits(text, wrong)`` for a number
whose wrong digits the site highlights. Import the new module at the bottom of
this file so that its functions are registered.

``python -m carrydemo figures`` writes ``NAME.plotly.json``, ``NAME.light.svg``
and ``NAME.dark.svg`` for every figure, ``NAME.table.json`` for every table,
and ``index.json`` listing them; a function that raises ``ResultsError``
(results it needs are missing) is listed with its message instead, so the site
fails only if a page shows it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import itertools
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on build machines

import matplotlib.pyplot as plt  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import plotly.io  # noqa: E402
import torch  # noqa: E402

from carrydemo.config import path_option  # noqa: E402
from carrydemo.data import (  # noqa: E402
    article_splits,
    decode_features,
    examples_from_pairs,
    from_digits,
)
from carrydemo.models import predict  # noqa: E402
from carrydemo.results import (  # noqa: E402
    TRAIN_COMMAND,
    ResultsError,
    add_results_argument,
    dumps,
    exchange_directories,
    file_sha256,
    load_curves,
    load_metrics,
    load_weights,
    write_bytes,
)

log = logging.getLogger(__name__)

DEFAULT_FIGURES_DIR = Path("build/figures")
THEMES = ("light", "dark")
# The command that makes each optional results file, for error messages.
MAKING_COMMAND = {"study": "nox -s study", "bench": "nox -s bench"}

# The article's own numbers, quoted beside ours (not results of this code).
ARTICLE_TEST_ACCURACY = {"mlp": 0.0025, "rnn": 0.7625}
# The six test inputs of the article's prediction table, as (a, b).
ARTICLE_EXAMPLES = (
    (334, 135),
    (384, 297),
    (8, 748),
    (313, 488),
    (226, 591),
    (334, 185),
)
RANDOM_EXAMPLES = 4  # test examples added to the article's six
TABLE_SEED = 7  # picks those test examples; fixed so the table never moves


@dataclass(frozen=True)
class Style:
    """Colours of one theme; the model colours read well on both backgrounds."""

    text: str
    grid: str
    accent: str  # the carry path
    train: str = "#1f77b4"
    validation: str = "#e8710a"
    mlp: str = "#7b61c9"
    rnn: str = "#1a9e77"


STYLES = {
    "light": Style(text="#1f2328", grid="#d0d7de", accent="#d6336c"),
    "dark": Style(
        text="#e2e4e9",
        grid="#4a4f5c",
        accent="#ff6b9a",
        train="#5aa9e6",
        validation="#ffa94d",
        mlp="#a48cf0",
        rnn="#38d9a9",
    ),
}


@dataclass
class FigureContext:
    """What a figure function may read: results, optional results, the theme."""

    results_dir: Path
    metrics: dict
    curves: dict
    manifest: dict
    study: dict | None = None
    bench: dict | None = None
    theme: str = "light"

    @property
    def style(self) -> Style:
        return STYLES[self.theme]

    def require(self, source: str) -> dict:
        """Return study or bench results, or raise naming the command making them."""
        data = getattr(self, source)
        if data is None:
            path = self.results_dir / f"{source}.json"
            raise ResultsError(f"no {path}; run `{MAKING_COMMAND[source]}` first")
        return data

    def model_names(self) -> list[str]:
        return list(self.metrics["models"])


@dataclass(frozen=True)
class Table:
    """A generated table: column titles, rows of cells, an optional note."""

    columns: list[str]
    rows: list[list]
    note: str = ""  # Markdown shown under the table (or instead of it, if empty)

    def to_dict(self) -> dict:
        return {"columns": self.columns, "rows": self.rows, "note": self.note}


def marked_digits(text: str, wrong: list[bool]) -> dict:
    """A cell showing ``text`` with the digits flagged in ``wrong`` highlighted."""
    return {"digits": text, "wrong": list(wrong)}


@dataclass(frozen=True)
class Registered:
    name: str
    function: Callable
    page: str = ""  # the page that shows it, for readers of the code


FIGURES: dict[str, Registered] = {}
TABLES: dict[str, Registered] = {}


def figure(name: str, page: str = "") -> Callable:
    """Register a function drawing the figure ``name`` (see the module docstring)."""
    return _register(FIGURES, name, page)


def table(name: str, page: str = "") -> Callable:
    """Register a function returning the Table ``name``."""
    return _register(TABLES, name, page)


def _register(registry: dict, name: str, page: str) -> Callable:
    def decorator(function: Callable) -> Callable:
        if name in FIGURES or name in TABLES:
            raise ValueError(f"figure or table {name!r} is registered twice")
        registry[name] = Registered(name, function, page)
        return function

    return decorator


# --- shared styling ---------------------------------------------------------


def plotly_layout(**settings) -> dict:
    """A neutral Plotly layout; the site's script applies the theme's colours."""
    layout = {
        "template": "none",
        "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
        "legend": {
            "orientation": "h",
            "yanchor": "top",
            "y": -0.22,
            "x": 0,
            "traceorder": "normal",
            "entrywidth": 0.5,
            "entrywidthmode": "fraction",
        },
        "hovermode": "x unified",
    }
    layout.update(settings)
    return layout


def new_axes(context: FigureContext, ncols: int = 1, width: float = 8, height=3.4):
    """A matplotlib figure in the theme's text and grid colours."""
    style = context.style
    with plt.rc_context(
        {
            "text.color": style.text,
            "axes.labelcolor": style.text,
            "axes.edgecolor": style.grid,
            "xtick.color": style.text,
            "ytick.color": style.text,
            "grid.color": style.grid,
            "font.size": 10,
        }
    ):
        fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    for ax in axes.flat:
        ax.set_facecolor("none")
        ax.grid(True, linewidth=0.6)
        for spine in ax.spines.values():
            spine.set_color(style.grid)
        ax.tick_params(colors=style.text)
        ax.xaxis.label.set_color(style.text)
        ax.yaxis.label.set_color(style.text)
        ax.title.set_color(style.text)
    return fig, list(axes.flat)


# --- learning curves (page: results.md) -------------------------------------

CURVE_PANELS = (("loss", "NLL loss (log scale)"), ("accuracy", "exact-match accuracy"))


def curves_on_grid(curves_by_seed: dict, key: str) -> tuple[list[int], list[list]]:
    """Every seed's curve on one epoch grid; a stopped run keeps its last value."""
    epochs = sorted({e for curves in curves_by_seed.values() for e in curves["epoch"]})
    columns = []
    for curves in curves_by_seed.values():
        values, index = [], 0
        for epoch in epochs:
            while (
                index + 1 < len(curves["epoch"]) and curves["epoch"][index + 1] <= epoch
            ):
                index += 1
            values.append(curves[key][index])
        columns.append(values)
    return epochs, columns


def loss_ticks(curves_by_seed: dict) -> list[float]:
    """Ticks at 1, 2 and 5 times a power of ten that span every loss curve.

    Both renderers label these alone, so a log axis reads "0.1 0.2 0.5 1 2"
    instead of a bare digit at every minor tick.
    """
    values = [
        value
        for split in ("train", "validation")
        for value in itertools.chain(
            *curves_on_grid(curves_by_seed, f"{split}_loss")[1]
        )
        if value is not None and value > 0
    ]
    if not values:
        return []
    low, high = min(values), max(values)
    exponents = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    # a range of less than a decade gets finer steps, so it has a few labels
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [
            float(f"{mantissa}e{exponent}")
            for exponent in exponents
            for mantissa in mantissas
            if low / 1.2 <= float(f"{mantissa}e{exponent}") <= high * 1.2
        ]
        if len(ticks) >= 3:
            break
    return ticks


def median_band(columns: list[list]) -> tuple[list, list, list]:
    """Per epoch: the median, the minimum and the maximum across seeds."""
    rows = list(zip(*columns, strict=True))
    medians = [statistics.median(row) for row in rows]
    return medians, [min(row) for row in rows], [max(row) for row in rows]


def learning_curves(context: FigureContext, model: str):
    """Loss and accuracy over epochs: median of the seeds, min-max band, first seed."""
    curves_by_seed = context.curves[model]
    first_seed = str(context.metrics["models"][model]["seed"])
    count = len(curves_by_seed)
    return (
        learning_curves_plotly(context, curves_by_seed, first_seed, count),
        learning_curves_matplotlib(context, curves_by_seed, count),
    )


def learning_curves_plotly(context, curves_by_seed, first_seed, count):
    from plotly.subplots import make_subplots

    style = STYLES["light"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in CURVE_PANELS])
    for col, (quantity, _) in enumerate(CURVE_PANELS, start=1):
        for split, colour in (("train", style.train), ("validation", style.validation)):
            key = f"{split}_{quantity}"
            epochs, columns = curves_on_grid(curves_by_seed, key)
            median, low, high = median_band(columns)
            label = "training" if split == "train" else "validation"
            # each legend entry toggles its traces in both panels
            rank = 1 if split == "train" else 2
            # the band: upper edge, then the lower edge filled up to it
            fig.add_scatter(
                x=epochs,
                y=high,
                mode="lines",
                line={"width": 0},
                legendgroup=f"{split}-band",
                showlegend=False,
                hoverinfo="skip",
                row=1,
                col=col,
            )
            fig.add_scatter(
                x=epochs,
                y=low,
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=_alpha(colour, 0.22),
                legendgroup=f"{split}-band",
                legendrank=rank + 2,
                name=f"{label}: min-max of {count} seeds",
                showlegend=col == 1,
                hoverinfo="skip",
                row=1,
                col=col,
            )
            fig.add_scatter(
                x=epochs,
                y=median,
                mode="lines",
                line={"color": colour, "width": 2},
                legendgroup=f"{split}-median",
                legendrank=rank,
                name=f"{label}: median",
                showlegend=col == 1,
                row=1,
                col=col,
            )
            seed_curves = curves_by_seed[first_seed]
            fig.add_scatter(
                x=seed_curves["epoch"],
                y=seed_curves[key],
                mode="lines",
                line={"color": colour, "width": 1, "dash": "dot"},
                legendgroup=f"{split}-seed",
                legendrank=rank + 4,
                name=f"{label}: seed {first_seed}",
                showlegend=col == 1,
                visible="legendonly",
                row=1,
                col=col,
            )
    fig.update_layout(**plotly_layout(height=520))
    fig.update_xaxes(title_text="epoch")
    ticks = loss_ticks(curves_by_seed)
    fig.update_yaxes(
        type="log",
        tickvals=ticks,
        ticktext=[f"{tick:g}" for tick in ticks],
        row=1,
        col=1,
    )
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(nticks=6)
    return fig


def learning_curves_matplotlib(context, curves_by_seed, count):
    style = context.style
    fig, axes = new_axes(context, ncols=2, width=9, height=3.4)
    for ax, (quantity, title) in zip(axes, CURVE_PANELS, strict=True):
        for split, colour in (("train", style.train), ("validation", style.validation)):
            epochs, columns = curves_on_grid(curves_by_seed, f"{split}_{quantity}")
            median, low, high = median_band(columns)
            label = "training" if split == "train" else "validation"
            ax.fill_between(epochs, low, high, color=colour, alpha=0.25, linewidth=0)
            ax.plot(epochs, median, color=colour, linewidth=1.8, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5, integer=True))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(epoch_label))
        if quantity == "loss":
            ax.set_yscale("log")
            ticks = loss_ticks(curves_by_seed)
            ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        else:
            ax.set_ylim(0, 1.02)
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    # the legend goes below both panels, where no curve can be under it
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    handles, labels = axes[0].get_legend_handles_labels()
    legend = fig.legend(
        handles,
        [f"{label}: median, band from min to max of {count} seeds" for label in labels],
        loc="lower center",
        ncol=2,
        frameon=False,
    )
    plt.setp(legend.get_texts(), color=style.text)
    return fig


def epoch_label(epoch: float, _position=None) -> str:
    """Tick label of an epoch axis: 20000 as "20k", so the labels never touch."""
    return f"{epoch / 1000:g}k" if epoch >= 1000 else f"{epoch:g}"


def _alpha(hex_colour: str, alpha: float) -> str:
    red, green, blue = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


@figure("learning_curves_mlp", page="results.md")
def learning_curves_mlp(context: FigureContext):
    return learning_curves(context, "mlp")


@figure("learning_curves_rnn", page="results.md")
def learning_curves_rnn(context: FigureContext):
    return learning_curves(context, "rnn")


# --- the unrolled network (page: unrolled.md) -------------------------------


@figure("unrolled_rnn", page="unrolled.md")
def unrolled_rnn(context: FigureContext):
    """The Elman RNN copied once per time step, the carry path highlighted."""
    config = context.metrics["config"]
    seed = context.metrics["models"]["rnn"]["seed"]
    weights = load_weights(context.results_dir, "rnn", seed)
    hidden_size = weights["rnn.weight_hh_l0"].shape[0]
    num_classes = weights["output.weight"].shape[0]
    num_digits = config["num_digits"]
    style = context.style

    fig, (ax,) = new_axes(context, width=2.6 * num_digits + 1.6, height=4.2)
    ax.grid(False)
    ax.set_axis_off()
    ax.set_xlim(-1.4, 2.6 * num_digits - 0.6)
    ax.set_ylim(-0.6, 4.6)
    place = ["units", "tens", "hundreds"] + [f"10^{t}" for t in range(3, num_digits)]
    for t in range(num_digits):
        x = 2.6 * t + 0.6
        _box(ax, x, 0.3, f"$x_{t + 1}$\n({place[t]} of a, b)", style.text, style)
        _box(ax, x, 2.0, f"$h_{t + 1}$\n{hidden_size} tanh units", style.accent, style)
        _box(ax, x, 3.7, f"$y_{t + 1}$\n{num_classes} digit classes", style.text, style)
        _arrow(ax, (x, 0.62), (x, 1.62), style.text)
        _arrow(ax, (x, 2.38), (x, 3.38), style.text)
        start = (x - 2.6 + 0.95, 2.0) if t else (-0.75, 2.0)
        _arrow(ax, start, (x - 0.95, 2.0), style.accent, width=2.6)
    ax.text(-1.0, 2.0, "$h_0 = 0$", ha="center", va="center", color=style.text)
    ax.text(
        2.6 * (num_digits - 1) / 2 + 0.6,
        -0.45,
        "the highlighted arrows carry the state, and with it the carry, "
        "from one digit to the next",
        ha="center",
        va="center",
        color=style.accent,
        fontsize=11,
    )
    return fig


def _box(ax, x, y, text, edge, style):
    ax.text(
        x,
        y,
        text,
        ha="center",
        va="center",
        color=style.text,
        fontsize=11,
        bbox={
            "boxstyle": "round,pad=0.45",
            "facecolor": "none",
            "edgecolor": edge,
            "linewidth": 1.6,
        },
    )


def _arrow(ax, start, end, colour, width=1.2):
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={"arrowstyle": "-|>", "color": colour, "linewidth": width},
    )


# --- tables -----------------------------------------------------------------


def sum_sentence(a: int, b: int, num_digits: int) -> str:
    total = a + b
    if total >= 10**num_digits:
        return f"{a} + {b} = {total}, label {total % 10**num_digits}"
    return f"{a} + {b} = {total}"


@table("dataset_examples", page="dataset.md")
def dataset_examples(context: FigureContext, count: int = 5) -> Table:
    """The first training examples: features and label units first, as numbers."""
    num_digits = context.metrics["config"]["num_digits"]
    train = article_splits(num_digits, context.metrics["config"]["data_seed"]).train
    rows = []
    for index in range(count):
        features = train.features[index].long().tolist()
        a, b = decode_features(features)
        label = train.labels[index].tolist()
        rows.append(
            [index + 1, str(features), str(label), sum_sentence(a, b, num_digits)]
        )
    columns = ["#", "features (units, tens, hundreds)", "label", "as numbers"]
    return Table(columns=columns, rows=rows)


@table("dataset_splits", page="dataset.md")
def dataset_splits(context: FigureContext) -> Table:
    """The sizes of the three splits, counted from the generated data."""
    config = context.metrics["config"]
    splits = article_splits(config["num_digits"], config["data_seed"])
    parts = (
        ("training", splits.train),
        ("validation", splits.validation),
        ("test", splits.test),
    )
    total = sum(len(part) for _, part in parts)
    rows, start = [], 0
    for name, part in parts:
        rows.append(
            [
                name,
                len(part),
                f"{len(part) / total:.0%}",
                f"{start + 1}-{start + len(part)}",
            ]
        )
        start += len(part)
    return Table(columns=["split", "examples", "share", "positions"], rows=rows)


@table("accuracy_summary", page="results.md")
def accuracy_summary(context: FigureContext) -> Table:
    """Per model: parameters, first seed's test accuracy, spread over all seeds."""
    rows = []
    for name, model in context.metrics["models"].items():
        summary = model["test_accuracy_summary"]
        article = ARTICLE_TEST_ACCURACY.get(name)
        rows.append(
            [
                name.upper(),
                model["parameters"],
                f"{model['test_accuracy']:.2%}",
                f"{summary['mean']:.2%} ± {summary['std']:.2%}",
                f"{summary['min']:.2%} to {summary['max']:.2%}",
                summary["n"],
                f"{article:.2%}" if article is not None else "",
            ]
        )
    seed = min(model["seed"] for model in context.metrics["models"].values())
    columns = [
        "model",
        "parameters",
        f"test, seed {seed}",
        "mean ± std over seeds",
        "min to max",
        "seeds",
        "article",
    ]
    return Table(columns=columns, rows=rows)


@table("model_parameters", page="models.md")
def model_parameters(context: FigureContext) -> Table:
    """Every weight tensor of both models, its shape and its number of values."""
    rows = []
    for name, model in context.metrics["models"].items():
        weights = load_weights(context.results_dir, name, model["seed"])
        for tensor_name in sorted(weights):
            shape = tuple(weights[tensor_name].shape)
            count = weights[tensor_name].numel()
            rows.append([name.upper(), tensor_name, " x ".join(map(str, shape)), count])
        rows.append([name.upper(), "total", "", model["parameters"]])
    return Table(columns=["model", "tensor", "shape", "parameters"], rows=rows)


def prediction_pairs(context: FigureContext) -> list[tuple[int, int, str]]:
    """The article's six inputs, then a few test examples picked by a fixed seed."""
    config = context.metrics["config"]
    pairs = []
    if config["num_digits"] == 3:
        pairs = [(a, b, "article") for a, b in ARTICLE_EXAMPLES]
    test = article_splits(config["num_digits"], config["data_seed"]).test
    generator = torch.Generator().manual_seed(TABLE_SEED)
    for index in torch.randperm(len(test), generator=generator)[:RANDOM_EXAMPLES]:
        a, b = decode_features(test.features[index].long().tolist())
        pairs.append((a, b, f"test #{int(index) + 1}"))
    return pairs


@table("predictions", page="results.md")
def predictions(context: FigureContext) -> Table:
    """MLP and RNN answers (first seed) against the true sum, wrong digits marked."""
    from carrydemo.results import load_trained_model

    num_digits = context.metrics["config"]["num_digits"]
    pairs = prediction_pairs(context)
    examples = examples_from_pairs([(a, b) for a, b, _ in pairs], num_digits)
    models = context.model_names()
    answers = {
        name: predict(load_trained_model(context.results_dir, name), examples.features)
        for name in models
    }
    rows = []
    for row, (a, b, source) in enumerate(pairs):
        label = examples.labels[row].tolist()
        cells = [row + 1, source, f"{a} + {b}"]
        for name in models:
            predicted = answers[name][row].tolist()
            cells.append(marked_answer(predicted, label))
        cells.append(str(a + b))
        rows.append(cells)
    columns = [
        "#",
        "from",
        "input",
        *(f"{m.upper()} predicted" for m in models),
        "correct sum",
    ]
    note = (
        f"Predictions of the first seed of each model, written most significant "
        f"digit first; a highlighted digit differs from the same digit of "
        f"(a + b) mod {10**num_digits}."
    )
    return Table(columns=columns, rows=rows, note=note)


def marked_answer(predicted: list[int], label: list[int]) -> dict:
    """A predicted number, most significant digit first, its wrong digits flagged."""
    text = str(from_digits(predicted)).zfill(len(predicted))
    wrong = [p != t for p, t in zip(reversed(predicted), reversed(label), strict=True)]
    return marked_digits(text, wrong)


@table("benchmark", page="performance.md")
def benchmark(context: FigureContext) -> Table:
    """The plain loop against stacks of K members, as ``carrydemo bench`` measured."""
    bench = context.bench
    if bench is None:
        return Table(
            columns=[],
            rows=[],
            note=(
                f"No benchmark results yet: run `{MAKING_COMMAND['bench']}` to measure "
                "them, then rebuild the site."
            ),
        )
    rows = [benchmark_row("plain loop", "1 at a time", bench["plain"])]
    for stacked in bench["stacked"]:
        kernel = BENCH_KERNEL_NAMES[stacked["kernel"]]
        label = f"stacked, {kernel}"
        rows.append(benchmark_row(label, f"{stacked['members']:,}", stacked))
    return Table(
        columns=[
            "engine",
            "models",
            "model-epochs per s",
            "× plain",
            "model-epochs per CPU s",
            "× plain (CPU time)",
            "share of the arithmetic bound",
        ],
        rows=rows,
        note=benchmark_note(bench),
    )


BENCH_KERNEL_NAMES = {"c": "C kernel", "tensor": "tensor operations"}


def benchmark_row(label: str, models: str, measured: dict) -> list:
    return [
        label,
        models,
        f"{measured['model_epochs_per_s']:,.0f}",
        f"{measured['speedup']:.1f}×",
        f"{measured['model_epochs_per_cpu_s']:,.0f}",
        f"{measured['speedup_cpu']:.1f}×",
        f"{100 * measured['fraction_of_bound']:.1f}%",
    ]


def benchmark_note(bench: dict) -> str:
    """What was measured, where, and against which bound."""
    load = ", ".join(f"{value:g}" for value in bench["load_average"])
    return (
        f"{bench['model'].upper()}, {bench['epochs']} epochs of batch size "
        f"{bench['batch_size']}, fastest of {bench['repeats']} repeats, "
        f"{bench['threads']} thread(s) on {bench['device']} ({bench['device_name']}, "
        f"{bench['cpu_count']} CPUs, load average {load}), PyTorch {bench['torch']}. "
        f"The bound is {bench['flops_per_model_epoch'] / 1e6:.1f} MFLOP per "
        f"model-epoch at the {bench['matmul_gflops']:.1f} GFLOP/s that one large "
        f"matrix product reached on this machine: "
        f"{bench['bound_model_epochs_per_s']:,.0f} model-epochs per second. The "
        "stacked and the plain weights differed by at most "
        f"{bench['max_abs_weight_difference']:.1e} after the same steps."
    )


# --- writing ----------------------------------------------------------------


def load_context(results_dir: Path) -> FigureContext:
    """Load a results folder; raise ResultsError naming `nox -s train` if absent."""
    results_dir = Path(results_dir)
    metrics = load_metrics(results_dir)
    optional = {}
    for source in ("study", "bench", "manifest"):
        path = results_dir / f"{source}.json"
        optional[source] = json.loads(path.read_text()) if path.exists() else None
    return FigureContext(
        results_dir=results_dir,
        metrics=metrics,
        curves=load_curves(results_dir),
        manifest=optional["manifest"] or {},
        study=optional["study"],
        bench=optional["bench"],
    )


def svg_bytes(fig) -> bytes:
    """A matplotlib figure as SVG with fixed ids and no date, then closed."""
    buffer = io.StringIO()
    with plt.rc_context({"svg.hashsalt": "carrydemo", "svg.fonttype": "path"}):
        fig.savefig(
            buffer,
            format="svg",
            transparent=True,
            metadata={"Date": None},
            bbox_inches="tight",
        )
    plt.close(fig)
    return buffer.getvalue().encode()


def plotly_bytes(fig: go.Figure) -> bytes:
    """A Plotly figure as JSON with sorted keys."""
    data = json.loads(plotly.io.to_json(fig, validate=False))
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()


def split_drawing(drawing) -> tuple[go.Figure | None, object | None]:
    """Sort a figure function's return value into (plotly, matplotlib)."""
    items = drawing if isinstance(drawing, tuple) else (drawing,)
    plotly_fig = next((item for item in items if isinstance(item, go.Figure)), None)
    mpl_fig = next((item for item in items if isinstance(item, plt.Figure)), None)
    return plotly_fig, mpl_fig


def source_hashes(results_dir: Path) -> dict:
    """The hash of every results file figures are drawn from (None: absent)."""
    hashes = {}
    for source in ("metrics", "manifest", "study", "bench"):
        path = Path(results_dir) / f"{source}.json"
        hashes[source] = file_sha256(path) if path.exists() else None
    return hashes


def render_figure(entry: Registered, context: FigureContext) -> dict[str, bytes]:
    """Every file of one figure, keyed by file name."""
    files = {}
    for theme in THEMES:
        context.theme = theme
        plotly_fig, mpl_fig = split_drawing(entry.function(context))
        if plotly_fig is not None and theme == "light":
            files[f"{entry.name}.plotly.json"] = plotly_bytes(plotly_fig)
        if mpl_fig is not None:
            files[f"{entry.name}.{theme}.svg"] = svg_bytes(mpl_fig)
    context.theme = "light"
    return files


def render_all(context: FigureContext) -> tuple[dict[str, bytes], dict]:
    """All files of all figures and tables, and the index describing them."""
    files, index = {}, {"figures": {}, "tables": {}}
    for kind, registry in (("figures", FIGURES), ("tables", TABLES)):
        for name in sorted(registry):
            entry = registry[name]
            try:
                if kind == "figures":
                    produced = render_figure(entry, context)
                else:
                    produced = {
                        f"{name}.table.json": dumps(
                            entry.function(context).to_dict()
                        ).encode()
                    }
            except ResultsError as error:
                index[kind][name] = {"missing": str(error)}
                log.info("skipped %s: %s", name, error)
                continue
            finally:
                plt.close("all")
            files.update(produced)
            index[kind][name] = {"files": sorted(produced)}
    index["sources"] = source_hashes(context.results_dir)
    files["index.json"] = dumps(index).encode()
    return files, index


def write_figures(results_dir: Path, out_dir: Path) -> dict:
    """Render everything into a staging folder and swap it in for ``out_dir``."""
    files, index = render_all(load_context(results_dir))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        for name, payload in files.items():
            write_bytes(staging / name, payload)
            os.chmod(staging / name, 0o644)
        os.chmod(staging, 0o755)
        # swapped in one step where the system allows it, so that the site
        # never finds the folder missing; staging then holds the old figures
        if not out_dir.exists():
            os.rename(staging, out_dir)
        elif not exchange_directories(staging, out_dir):
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(out_dir, old)
            os.rename(staging, out_dir)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return index


def fingerprint(directory: Path) -> str:
    """One hash over a figures folder, for tests and caching."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# --- command line -----------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_results_argument(parser)
    parser.add_argument(
        "--out",
        type=path_option,
        default=DEFAULT_FIGURES_DIR,
        help=f"folder to write the figures to (default: {DEFAULT_FIGURES_DIR})",
    )


def run(args) -> int:
    """Write every registered figure and table; ResultsError reaches the CLI."""
    if not (Path(args.results) / "metrics.json").exists():
        raise ResultsError(f"no results at {args.results}; run `{TRAIN_COMMAND}` first")
    torch.set_num_threads(1)
    index = write_figures(args.results, args.out)
    written = sum(
        "files" in e for kind in ("figures", "tables") for e in index[kind].values()
    )
    log.info("wrote %d figures and tables to %s", written, args.out)
    return 0


# Modules that register more figures import this one; import them here so that
# every registration happens whoever imports the registry first.
EXTRA_MODULES = ("carrydemo.study_figures",)


def import_extra_modules() -> None:
    for module in EXTRA_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


import_extra_modules()
