"""Figures and tables of the study pages (docs/study/), drawn from study.json."""

from __future__ import annotations

import statistics

import matplotlib
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from carrydemo.figures import (
    STYLES,
    FigureContext,
    Table,
    figure,
    new_axes,
    plotly_layout,
    table,
)

# Groups of models the study compares, with their labels and line colours.
GROUP_LABELS = {
    "mlp_best_lr": "MLP, best lr",
    "rnn_best_lr": "RNN, best lr",
    "rnn_3_digits": "RNN trained on 3 digits",
    "rnn_1_to_5_digits": "RNN trained on 1 to 5 digits",
    "recipe": "RNN, recipe",
    "constructed": "constructed RNN (42 parameters)",
    "untrained": "untrained RNN",
    "trained": "RNN, best lr",
}
# The order in which groups are drawn (study.json keeps its keys sorted).
GROUP_ORDER = (
    "mlp_best_lr",
    "rnn_best_lr",
    "rnn_3_digits",
    "rnn_1_to_5_digits",
    "untrained",
    "trained",
    "recipe",
    "constructed",
)
EXTRA_COLOURS = {"recipe": "#d6336c", "constructed": "#8a6d00", "untrained": "#888888"}


def colour(group: str, theme: str = "light") -> str:
    style = STYLES[theme]
    if group.startswith("mlp"):
        return style.mlp
    if group in EXTRA_COLOURS:
        return EXTRA_COLOURS[group]
    if group == "rnn_1_to_5_digits":
        return style.train
    return style.rnn


def ordered(groups: dict) -> list[tuple[str, dict]]:
    """The items of ``groups`` in GROUP_ORDER, unknown groups last."""
    rank = {group: index for index, group in enumerate(GROUP_ORDER)}
    return sorted(groups.items(), key=lambda item: rank.get(item[0], len(rank)))


def label(group: str) -> str:
    return GROUP_LABELS.get(group, group.replace("_", " "))


def percent_axis(ax) -> None:
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_ylim(-0.02, 1.02)


def rgba(hex_colour: str, alpha: float) -> str:
    red, green, blue = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def plotly_band(fig, x, summaries, group, **where):
    """Median line and min-max band of one group, from summarize() dicts."""
    line = colour(group)
    fig.add_scatter(
        x=x,
        y=[s["max"] for s in summaries],
        mode="lines",
        line={"width": 0},
        legendgroup=group,
        showlegend=False,
        hoverinfo="skip",
        **where,
    )
    fig.add_scatter(
        x=x,
        y=[s["min"] for s in summaries],
        mode="lines",
        line={"width": 0},
        fill="tonexty",
        fillcolor=rgba(line, 0.2),
        legendgroup=group,
        showlegend=False,
        hoverinfo="skip",
        **where,
    )
    fig.add_scatter(
        x=x,
        y=[s["median"] for s in summaries],
        mode="lines+markers",
        line={"color": line, "width": 2},
        name=f"{label(group)}: median, min-max band",
        legendgroup=group,
        **where,
    )


def matplotlib_band(ax, x, summaries, group, theme):
    line = colour(group, theme)
    low, high = [s["min"] for s in summaries], [s["max"] for s in summaries]
    ax.fill_between(x, low, high, color=line, alpha=0.22, linewidth=0)
    median = [s["median"] for s in summaries]
    ax.plot(x, median, color=line, marker="o", markersize=3, label=label(group))


def finish_legend(ax, context: FigureContext, **settings) -> None:
    legend = ax.legend(frameon=False, **settings)
    for text in legend.get_texts():
        text.set_color(context.style.text)


# --- seeds and learning rates (page: study/robustness.md) -------------------


@table("study_seeds", page="study/robustness.md")
def study_seeds(context: FigureContext) -> Table:
    """The article's configuration over every seed, and where its numbers fall."""
    seeds = context.require("study")["seeds"]
    if not seeds["available"]:
        return Table([], [], note=f"No trained models were found: {seeds['reason']}.")
    rows = []
    for name, model in seeds["models"].items():
        test, total = model["test_accuracy"], model["exhaustive_exact_match"]
        rows.append(
            [
                name.upper(),
                test["n"],
                f"{test['mean']:.2%} ± {test['std']:.2%}",
                f"{test['min']:.2%} to {test['max']:.2%}",
                f"{model['article']:.2%}",
                f"{model['seeds_above_article']} of {test['n']}",
                f"{total['mean']:.2%}",
            ]
        )
    columns = [
        "model",
        "seeds",
        "test: mean ± std",
        "test: min to max",
        "article",
        "seeds above the article",
        "all 10⁶ pairs: mean",
    ]
    return Table(columns, rows)


@figure("study_lr_sweep", page="study/robustness.md")
def study_lr_sweep(context: FigureContext):
    """Test exact-match against learning rate: median and min-max band per model."""
    sweep = context.require("study")["lr_sweep"]
    models = sweep["models"]
    fig = go.Figure()
    for name in ("rnn", "mlp"):
        rows = models[name]["by_lr"]
        x = [row["lr"] for row in rows]
        plotly_band(fig, x, [row["test_accuracy"] for row in rows], f"{name}_best_lr")
    fig.update_layout(**plotly_layout(height=440, hovermode="closest"))
    fig.update_xaxes(type="log", title_text="learning rate (Adam)")
    fig.update_yaxes(tickformat=".0%", range=[-0.02, 1.02], title_text="test exact")

    mpl, (ax,) = new_axes(context, width=7, height=3.6)
    for name in ("rnn", "mlp"):
        rows = models[name]["by_lr"]
        x = [row["lr"] for row in rows]
        summaries = [row["test_accuracy"] for row in rows]
        matplotlib_band(ax, x, summaries, f"{name}_best_lr", context.theme)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (Adam)")
    ax.set_ylabel("test exact-match")
    percent_axis(ax)
    finish_legend(ax, context, title=None)
    mpl.tight_layout()
    return fig, mpl


@table("study_lr_table", page="study/robustness.md")
def study_lr_table(context: FigureContext) -> Table:
    sweep = context.require("study")["lr_sweep"]
    mlp, rnn = sweep["models"]["mlp"]["by_lr"], sweep["models"]["rnn"]["by_lr"]
    rows = []
    for mlp_row, rnn_row in zip(mlp, rnn, strict=True):
        m, r = mlp_row["test_accuracy"], rnn_row["test_accuracy"]
        rows.append(
            [
                f"{mlp_row['lr']:g}",
                f"{m['median']:.2%}",
                f"{m['min']:.2%} to {m['max']:.2%}",
                f"{r['median']:.2%}",
                f"{r['min']:.2%} to {r['max']:.2%}",
            ]
        )
    columns = ["lr", "MLP median", "MLP min to max", "RNN median", "RNN min to max"]
    return Table(columns, rows)


# --- exhaustive evaluation (page: study/exhaustive.md) ----------------------


@table("study_exhaustive", page="study/exhaustive.md")
def study_exhaustive(context: FigureContext) -> Table:
    """Exact-match and per-digit accuracy of every group on all 10**6 pairs."""
    groups = context.require("study")["exhaustive"]["groups"]
    rows = []
    for group, scores in ordered(groups):
        exact = scores["exact_match"]
        positions = zip(*(run["per_position"] for run in scores["runs"]), strict=True)
        rows.append(
            [
                label(group),
                exact["n"],
                f"{exact['median']:.2%}",
                f"{exact['max']:.4%}",
                *(f"{statistics.median(p):.2%}" for p in positions),
            ]
        )
    columns = ["models", "seeds", "exact: median", "exact: best"]
    columns += ["units digit", "tens digit", "hundreds digit"]
    note = "Digit columns: share of single digits right, median over the seeds."
    return Table(columns, rows, note=note)


@figure("study_carries", page="study/exhaustive.md")
def study_carries(context: FigureContext):
    """Exact-match on all pairs, by number of carries and by longest carry chain."""
    groups = context.require("study")["exhaustive"]["groups"]
    panels = (("by_carries", "carries into a digit"), ("by_chain", "longest chain"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in panels])
    for col, (key, _) in enumerate(panels, start=1):
        for group, scores in ordered(groups):
            values = scores[key]
            fig.add_bar(
                x=sorted(values),
                y=[values[k]["exact_match"] for k in sorted(values)],
                name=label(group),
                marker_color=colour(group),
                legendgroup=group,
                showlegend=col == 1,
                row=1,
                col=col,
            )
    fig.update_layout(**plotly_layout(height=460, barmode="group"))
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02])

    mpl, axes = new_axes(context, ncols=2, width=9, height=3.6)
    width = 0.8 / len(groups)
    for ax, (key, title) in zip(axes, panels, strict=True):
        for index, (group, scores) in enumerate(ordered(groups)):
            values = scores[key]
            x = [int(k) + (index - (len(groups) - 1) / 2) * width for k in values]
            accuracies = [values[k]["exact_match"] for k in values]
            shade = colour(group, context.theme)
            ax.bar(x, accuracies, width, color=shade, label=label(group))
        ax.set_title(title)
        ax.set_xticks(sorted(int(k) for k in next(iter(groups.values()))[key]))
        percent_axis(ax)
    mpl.tight_layout(rect=(0, 0.12, 1, 1))
    handles, labels = axes[0].get_legend_handles_labels()
    legend = mpl.legend(
        handles, labels, loc="lower center", ncols=len(groups), frameon=False
    )
    for text in legend.get_texts():
        text.set_color(context.style.text)
    return fig, mpl


# --- longer numbers (page: study/lengths.md) --------------------------------


@figure("study_lengths", page="study/lengths.md")
def study_lengths(context: FigureContext):
    """Exact-match on random sums of every length: median and min-max per group."""
    section = context.require("study")["length_generalization"]
    lengths = section["lengths"]
    fig = go.Figure()
    mpl, (ax,) = new_axes(context, width=7, height=3.8)
    for group, data in ordered(section["groups"]):
        summaries = [data["by_length"][str(n)]["exact_match"] for n in lengths]
        plotly_band(fig, lengths, summaries, group)
        matplotlib_band(ax, lengths, summaries, group, context.theme)
    fig.update_layout(**plotly_layout(height=480, hovermode="closest"))
    fig.update_xaxes(type="log", title_text="digits per number")
    fig.update_yaxes(tickformat=".0%", range=[-0.02, 1.02], title_text="exact-match")
    ax.set_xscale("log")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_xlabel("digits per number")
    ax.set_ylabel("exact-match")
    percent_axis(ax)
    finish_legend(ax, context, fontsize=8)
    mpl.tight_layout()
    return fig, mpl


@table("study_lengths_table", page="study/lengths.md")
def study_lengths_table(context: FigureContext) -> Table:
    section = context.require("study")["length_generalization"]
    rows = []
    for group, data in ordered(section["groups"]):
        cells = []
        for n in section["lengths"]:
            entry = data["by_length"][str(n)]
            cells.append(
                f"{entry['exact_match']['median']:.1%} / "
                f"{entry['exact_match']['max']:.1%}"
            )
        rows.append([label(group), data["models"], *cells])
    columns = ["models", "seeds", *(f"{n} digits" for n in section["lengths"])]
    note = (
        "Each cell: median / best seed, exact-match on "
        f"{section['examples_per_length']:,} random sums of that length."
    )
    return Table(columns, rows, note=note)


# --- inside the RNN (page: study/inside.md) ---------------------------------


@figure("study_probe", page="study/inside.md")
def study_probe(context: FigureContext):
    """Linear-probe accuracy for the carry, per time step and model."""
    models = context.require("study")["carry_probe"]["models"]
    steps = ["units", "tens", "hundreds"]
    fig = go.Figure()
    mpl, (ax,) = new_axes(context, width=7, height=3.4)
    width = 0.8 / len(models)
    for index, (name, data) in enumerate(ordered(models)):
        per_step = data["probe"]["per_step"]
        fig.add_bar(
            x=steps[: len(per_step)],
            y=per_step,
            name=label(name),
            marker_color=colour(name),
        )
        x = [t + (index - (len(models) - 1) / 2) * width for t in range(len(per_step))]
        ax.bar(x, per_step, width, color=colour(name, context.theme), label=label(name))
    fig.update_layout(**plotly_layout(height=420, barmode="group"))
    fig.update_yaxes(tickformat=".0%", range=[0.8, 1.005], title_text="probe accuracy")
    ax.set_xticks(range(len(steps)), steps)
    ax.set_ylim(0.8, 1.005)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_ylabel("carry read correctly")
    finish_legend(
        ax,
        context,
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncols=2,
    )
    mpl.tight_layout()
    return fig, mpl


@figure("study_pca", page="study/inside.md")
def study_pca(context: FigureContext):
    """Hidden states on their first two principal axes, coloured by the carry."""
    models = context.require("study")["carry_probe"]["models"]
    names = [name for name in ("trained", "recipe") if name in models]
    carry_colours = {0: "#1f77b4", 1: "#e8710a"}
    fig = make_subplots(
        rows=1, cols=len(names), subplot_titles=[label(n) for n in names]
    )
    mpl, axes = new_axes(context, ncols=len(names), width=9, height=3.8)
    for col, name in enumerate(names, start=1):
        pca = models[name]["pca"]
        for carry in (0, 1):
            keep = [i for i, c in enumerate(pca["carry"]) if c == carry]
            text = "carry" if carry else "no carry"
            x = [pca["x"][i] for i in keep]
            y = [pca["y"][i] for i in keep]
            fig.add_scatter(
                x=x,
                y=y,
                mode="markers",
                marker={"color": carry_colours[carry], "size": 4, "opacity": 0.6},
                name=text,
                legendgroup=text,
                showlegend=col == 1,
                row=1,
                col=col,
            )
            axes[col - 1].scatter(
                x, y, s=4, alpha=0.6, color=carry_colours[carry], label=text
            )
        axes[col - 1].set_title(label(name))
        axes[col - 1].set_xlabel("first principal axis")
    axes[0].set_ylabel("second principal axis")
    finish_legend(axes[0], context, fontsize=8)
    fig.update_layout(**plotly_layout(height=460, hovermode="closest"))
    mpl.tight_layout()
    return fig, mpl


@figure("study_hidden_states", page="study/inside.md")
def study_hidden_states(context: FigureContext):
    """The trained RNN's hidden state after each step, for a few chosen sums."""
    probe = context.require("study")["carry_probe"]
    states = probe["models"]["trained"]["chosen_states"]  # (examples, T, H)
    mpl, axes = new_axes(context, ncols=len(states), width=9, height=3.6)
    for ax, example, title in zip(axes, states, probe["chosen"], strict=True):
        image = ax.imshow(
            list(zip(*example, strict=True)),
            cmap="coolwarm",
            vmin=-1,
            vmax=1,
            aspect="auto",
        )
        ax.grid(False)
        ax.set_title(title)
        ax.set_xticks(range(len(example)), ["u", "t", "h"][: len(example)])
        ax.set_yticks([])
        ax.set_xlabel("step")
    units = len(states[0][0])
    axes[0].set_yticks(range(0, units, 5), [str(u + 1) for u in range(0, units, 5)])
    axes[0].set_ylabel("hidden unit")
    mpl.subplots_adjust(bottom=0.2, top=0.88)
    bar = mpl.colorbar(image, ax=axes, fraction=0.03)
    bar.ax.tick_params(colors=context.style.text)
    return mpl


# --- the limit (page: study/limit.md) ---------------------------------------


@table("study_constructed_weights", page="study/limit.md")
def study_constructed_weights(context: FigureContext) -> Table:
    weights = context.require("study")["constructed"]["weights"]
    rows = [[key, str(value)] for key, value in weights.items()]
    return Table(["weight", "value"], rows)


@figure("study_hidden_sizes", page="study/limit.md")
def study_hidden_sizes(context: FigureContext):
    """Best and median exhaustive accuracy of trained RNNs against parameters."""
    study = context.require("study")
    sweep = study["hidden_size_sweep"]
    params = [row["parameters"] for row in sweep["sizes"]]
    summaries = [row["exhaustive_exact_match"] for row in sweep["sizes"]]
    sizes = [row["hidden_size"] for row in sweep["sizes"]]
    constructed = (sweep["constructed_parameters"], 1.0)
    recipe = study["recipe"]
    recipe_point = (recipe["parameters"], max(recipe["exhaustive_exact_match"]))
    fig = go.Figure()
    for key, dash in (("max", "solid"), ("median", "dot")):
        fig.add_scatter(
            x=params,
            y=[s[key] for s in summaries],
            mode="lines+markers",
            text=[f"hidden size {h}" for h in sizes],
            line={"color": colour("rnn"), "dash": dash},
            name=f"trained RNN, {'best' if key == 'max' else 'median'} seed",
        )
    for (x, y), group in ((constructed, "constructed"), (recipe_point, "recipe")):
        fig.add_scatter(
            x=[x],
            y=[y],
            mode="markers",
            marker={"size": 12, "symbol": "star", "color": colour(group)},
            name=label(group),
        )
    fig.update_layout(**plotly_layout(height=460, hovermode="closest"))
    fig.update_xaxes(type="log", title_text="parameters")
    fig.update_yaxes(tickformat=".0%", range=[-0.02, 1.02], title_text="exact on 10⁶")

    mpl, (ax,) = new_axes(context, width=7, height=3.6)
    line = colour("rnn", context.theme)
    ax.plot(params, [s["max"] for s in summaries], "-o", color=line, label="best seed")
    median = [s["median"] for s in summaries]
    ax.plot(params, median, ":o", color=line, label="median seed")
    for (x, y), group in ((constructed, "constructed"), (recipe_point, "recipe")):
        ax.plot([x], [y], "*", markersize=12, color=colour(group), label=label(group))
    ax.set_xscale("log")
    ticks = sorted({params[0], constructed[0], 100, 250, params[-1]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("parameters")
    ax.set_ylabel("exact-match on all 10⁶ pairs")
    percent_axis(ax)
    finish_legend(ax, context, fontsize=8)
    mpl.tight_layout()
    return fig, mpl


@table("study_recipe", page="study/limit.md")
def study_recipe(context: FigureContext) -> Table:
    recipe = context.require("study")["recipe"]
    lengths = recipe["length_generalization"]["by_length"]
    rows = [
        [index, f"{score:.4%}", recipe["epochs_run"][index]]
        for index, score in enumerate(recipe["exhaustive_exact_match"])
    ]
    note = "Median / best seed on longer random sums: " + ", ".join(
        f"{n} digits {v['exact_match']['median']:.1%} / {v['exact_match']['max']:.1%}"
        for n, v in sorted(lengths.items(), key=lambda item: int(item[0]))
    )
    return Table(["seed", "exact on all 10⁶ pairs", "epochs run"], rows, note=note)
