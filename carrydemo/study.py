"""The study beyond the article: ``python -m carrydemo study`` writes study.json.

Eight sections, each a key of ``build/results/study.json``:

- ``seeds``: the article's configuration over ten seeds per model, read from
  ``metrics.json`` of ``nox -s train`` (this command does not train it);
- ``lr_sweep``: both models at six learning rates, ten seeds each;
- ``exhaustive``: trained models scored on all 10**6 pairs of 3-digit numbers;
- ``length_generalization``: RNNs trained on 3 digits (and on 1 to 5) run on
  longer numbers;
- ``carry_probe``: a logistic regression that reads the carry from the hidden
  state, and a 2-D projection of the hidden states;
- ``constructed``: the hand-built 42-parameter RNN of ``constructed.py``;
- ``hidden_size_sweep``: trained RNNs with 1 to 21 hidden units;
- ``recipe``: a training recipe under which the 745-parameter RNN adds exactly.

Every model is trained with the stacked trainer (``stacked.py``), many
members per run.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from carrydemo import exhaustive
from carrydemo.config import ConfigError, TrainConfig, path_option
from carrydemo.constructed import constructed_rnn
from carrydemo.data import (
    Examples,
    Splits,
    article_splits,
    examples_from_pairs,
    labels_for,
    make_examples,
)
from carrydemo.models import ElmanRNN, build_model, count_parameters
from carrydemo.probe import hidden_and_carries, probe_accuracy
from carrydemo.results import (
    DEFAULT_RESULTS_DIR,
    ResultsError,
    load_metrics,
    load_trained_model,
    summarize,
    write_json,
)
from carrydemo.stacked import StackedRun, train_stacked
from carrydemo.train import seeded_model

log = logging.getLogger(__name__)

STUDY_COMMAND = "nox -s study"
ARTICLE_ACCURACY = {"mlp": 0.0025, "rnn": 0.7625}  # one run each, 400 test examples
# Seeds of their own for every data set the study draws, apart from DATA_SEED.
LENGTH_SEED = 31_000
PROBE_SEED = 32_000
RECIPE_DATA_SEED = 33_000
SEED_STRIDE = 100  # setting i trains seeds 100*i .. 100*i + n - 1: all distinct


@dataclass(frozen=True)
class RecipeConfig:
    """How the recipe trains its 745-parameter RNNs (chosen by measurement)."""

    num_digits: int = 5  # train on 5-digit sums: every prefix is a shorter sum
    balanced: bool = True  # column sums 0..18 equally often, see balanced_examples
    train_examples: int = 2000
    batch_size: int = 64
    lr: float = 1e-2
    epochs: int = 1000
    loss_threshold: float = 1e-4


@dataclass(frozen=True)
class StudyConfig:
    """Sizes of every experiment of the study; ``QUICK`` is the test version."""

    seeds: int = 10  # per setting
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    sweep_epochs: int = 1000  # the article allows 20,000 at lr 1e-4
    hidden_sizes: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 21)
    hidden_seeds: int = 5
    hidden_lr: float = 1e-2
    hidden_epochs: int = 500
    lengths: tuple[int, ...] = (3, 4, 5, 10, 20, 50, 100)
    length_examples: int = 1000
    mixed_digits: int = 5  # the mixed-length RNNs see sums of 1 to 5 digits
    mixed_lr: float = 3e-3
    probe_examples: int = 2000
    recipe: RecipeConfig = field(default_factory=RecipeConfig)


QUICK = StudyConfig(
    seeds=2,
    lrs=(1e-3, 1e-2),
    sweep_epochs=2,
    hidden_sizes=(1, 2),
    hidden_seeds=2,
    hidden_epochs=2,
    lengths=(3, 4, 10, 100),
    length_examples=50,
    probe_examples=200,
    recipe=RecipeConfig(train_examples=100, epochs=2),
)


# --- training -----------------------------------------------------------------


def sweep_config(name: str, epochs: int, **changes) -> TrainConfig:
    """The article's settings with a fixed number of epochs and no early stop."""
    return TrainConfig(
        models=(name,),
        epochs=epochs,
        eval_every=max(1, epochs // 10),
        loss_threshold=0.0,
        device="cpu",
        **changes,
    )


def train_lr_sweep(name: str, config: StudyConfig, splits: Splits) -> dict:
    """Train ``config.seeds`` models per learning rate, all in one stack."""
    seeds, lrs = [], []
    for index, lr in enumerate(config.lrs):
        seeds += [SEED_STRIDE * index + s for s in range(config.seeds)]
        lrs += [lr] * config.seeds
    runs = train_stacked(
        name, seeds, sweep_config(name, config.sweep_epochs), splits, lrs=lrs
    )
    by_lr = {lr: [] for lr in config.lrs}
    for run, lr in zip(runs, lrs, strict=True):
        by_lr[lr].append(run)
    return by_lr


def train_hidden_sizes(config: StudyConfig, splits: Splits) -> dict:
    """Train RNNs of every hidden size in one stack of the largest size.

    A smaller RNN is embedded in the largest one with its extra units' weights
    at zero. Those units stay at zero: their state is tanh(0) = 0, every
    gradient that reaches their weights is 0, and Adam moves a weight whose
    gradient has always been 0 by 0 / (0 + eps) = 0. So each member trains
    exactly as the smaller RNN would on its own.
    """
    largest = max(config.hidden_sizes)
    members = [
        (size, SEED_STRIDE * size + s)
        for size in config.hidden_sizes
        for s in range(config.hidden_seeds)
    ]
    train_config = sweep_config("rnn", config.hidden_epochs, hidden_size=largest)
    seeds = [seed for _, seed in members]
    lrs = [config.hidden_lr] * len(members)
    run = StackedRun("rnn", seeds, lrs, train_config, splits, torch.device("cpu"))
    with torch.no_grad():
        for row, (size, seed) in enumerate(members):
            small = seeded_model("rnn", seed, hidden_size=size).state_dict()
            run.stack.params[row] = run.network.to_flat(embed_state(small, largest))
    run.train()
    by_size = {size: [] for size in config.hidden_sizes}
    for (size, _), result in zip(members, run.results(), strict=True):
        by_size[size].append(shrink_state(result.state, size))
    return by_size


def embed_state(state: dict, hidden_size: int) -> dict:
    """An RNN state dict padded with zero units up to ``hidden_size``."""
    size = state["rnn.weight_hh_l0"].shape[0]
    pad = hidden_size - size
    pad_rows = lambda w: torch.cat([w, w.new_zeros(pad, *w.shape[1:])])  # noqa: E731
    padded = {key: pad_rows(value) for key, value in state.items() if "rnn." in key}
    padded["rnn.weight_hh_l0"] = torch.nn.functional.pad(
        padded["rnn.weight_hh_l0"], (0, pad)
    )
    padded["output.weight"] = torch.nn.functional.pad(state["output.weight"], (0, pad))
    padded["output.bias"] = state["output.bias"]
    return padded


def shrink_state(state: dict, hidden_size: int) -> dict:
    """The first ``hidden_size`` units of a padded RNN state dict."""
    shrunk = {key: value[:hidden_size] for key, value in state.items() if "rnn." in key}
    shrunk["rnn.weight_hh_l0"] = shrunk["rnn.weight_hh_l0"][:, :hidden_size]
    shrunk["output.weight"] = state["output.weight"][:, :hidden_size]
    shrunk["output.bias"] = state["output.bias"]
    return shrunk


def rnn_from_state(state: dict) -> ElmanRNN:
    model = build_model("rnn", hidden_size=state["rnn.weight_hh_l0"].shape[0])
    model.load_state_dict(state)
    return model.eval()


def model_from_run(run) -> torch.nn.Module:
    if run.model == "rnn":
        return rnn_from_state(run.state)
    model = build_model(run.model)
    model.load_state_dict(run.state)
    return model.eval()


# --- evaluation helpers -------------------------------------------------------


class AllPairs:
    """All 10**6 pairs of 3-digit numbers with their carry counts, made once.

    Scores are kept per model (while the model lives), since several sections
    ask about the same trained models.
    """

    def __init__(self):
        self.examples = exhaustive.all_pairs(3)
        self.groups = exhaustive.carry_groups(self.examples)
        self.scores = weakref.WeakKeyDictionary()

    def score(self, model) -> dict:
        if model not in self.scores:
            predicted = exhaustive.predict_all_pairs(model)
            self.scores[model] = exhaustive.score(predicted, self.examples, self.groups)
        return self.scores[model]

    def exact_match(self, model) -> float:
        if model in self.scores:
            return self.scores[model]["exact_match"]
        predicted = exhaustive.predict_all_pairs(model)
        return (predicted == self.examples.labels).all(1).float().mean().item()


def exact_match(model, examples: Examples) -> float:
    with torch.no_grad():
        predicted = model(examples.features).argmax(-1)
    return (predicted == examples.labels).all(1).float().mean().item()


def all_nines_plus_one(num_digits: int) -> Examples:
    """999...9 + 1: one carry that ripples through every digit."""
    features = torch.zeros(1, num_digits, 2)
    features[0, :, 0] = 9
    features[0, 0, 1] = 1
    return Examples(features, torch.zeros(1, num_digits, dtype=torch.long))


def group_scores(scores: list[dict]) -> dict:
    """Per-seed exhaustive scores and their mean breakdown by carries and chains."""
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    combined = {}
    for key in ("by_carries", "by_chain", "by_largest_column"):
        combined[key] = {
            group: {
                "examples": scores[0][key][group]["examples"],
                "exact_match": mean([s[key][group]["exact_match"] for s in scores]),
            }
            for group in scores[0][key]
        }
    exact = [s["exact_match"] for s in scores]
    return {
        "exact_match": summarize(exact),
        "per_digit": summarize([s["per_digit"] for s in scores]),
        "runs": scores,
        **combined,
    }


# --- the sections -------------------------------------------------------------


def seeds_section(results_dir: Path, pairs: AllPairs) -> dict:
    """The article's configuration over every seed of ``nox -s train``."""
    try:
        metrics = load_metrics(results_dir)
    except ResultsError as error:
        reason = f"{error}; then run `{STUDY_COMMAND}` again"
        return {"available": False, "reason": reason, "command": "nox -s train"}
    section = {"available": True, "config": metrics["config"], "models": {}}
    for name, model_metrics in metrics["models"].items():
        accuracies = [run["test_accuracy"] for run in model_metrics["runs"]]
        article = ARTICLE_ACCURACY[name]
        exhaustive_scores = [
            pairs.exact_match(load_trained_model(results_dir, name, run["seed"]))
            for run in model_metrics["runs"]
        ]
        section["models"][name] = {
            "test_accuracy": summarize(accuracies),
            "seeds": [run["seed"] for run in model_metrics["runs"]],
            "test_accuracies": accuracies,
            "exhaustive_exact_match": summarize(exhaustive_scores),
            "article": article,
            "seeds_at_or_below_article": sum(a <= article for a in accuracies),
            "seeds_above_article": sum(a > article for a in accuracies),
        }
    return section


def lr_sweep_section(config: StudyConfig, sweeps: dict) -> dict:
    section = {"lrs": list(config.lrs), "epochs": config.sweep_epochs, "models": {}}
    for name, by_lr in sweeps.items():
        rows = []
        for lr, runs in by_lr.items():
            accuracies = [run.test_accuracy for run in runs]
            rows.append({"lr": lr, "test_accuracy": summarize(accuracies)})
        best = max(rows, key=lambda row: row["test_accuracy"]["median"])
        section["models"][name] = {
            "by_lr": rows,
            "best_lr": best["lr"],
            "best": best["test_accuracy"],
        }
    rnn, mlp = section["models"]["rnn"]["best"], section["models"]["mlp"]["best"]
    section["gap_median"] = rnn["median"] - mlp["median"]
    section["gap_best"] = rnn["max"] - mlp["max"]
    return section


def length_section(config: StudyConfig, groups: dict) -> dict:
    """Exact-match of RNN groups on random sums of every length, and on 99..9 + 1."""
    tests = {
        length: make_examples(config.length_examples, length, LENGTH_SEED + length)
        for length in config.lengths
    }
    section = {
        "lengths": list(config.lengths),
        "examples_per_length": config.length_examples,
        "groups": {},
    }
    for group, models in groups.items():
        by_length = {}
        for length, examples in tests.items():
            accuracies = [exact_match(model, examples) for model in models]
            chains = [
                exact_match(model, all_nines_plus_one(length)) for model in models
            ]
            by_length[str(length)] = {
                "exact_match": summarize(accuracies),
                "nines_plus_one_solved": sum(int(c) for c in chains),
            }
        section["groups"][group] = {"models": len(models), "by_length": by_length}
    return section


def probe_section(config: StudyConfig, models: dict) -> dict:
    """Probe accuracy per step, chosen hidden-state paths and a PCA, per model."""
    fit_on = make_examples(config.probe_examples, 3, PROBE_SEED)
    test_on = make_examples(config.probe_examples, 3, PROBE_SEED + 1)
    chosen_pairs = [(438, 540), (955, 397), (999, 1), (55, 55)]
    chosen = examples_from_pairs(chosen_pairs, 3)
    section = {"chosen": [f"{a} + {b}" for a, b in chosen_pairs], "models": {}}
    for name, model in models.items():
        states, _ = hidden_and_carries(model, chosen)
        section["models"][name] = {
            "hidden_size": model.config.hidden_size,
            "probe": probe_accuracy(model, fit_on, test_on),
            "chosen_states": rounded(states),
            "pca": pca_projection(model, test_on.take(0, 300)),
        }
    return section


def pca_projection(model: ElmanRNN, examples: Examples) -> dict:
    """Hidden states of every step projected on their first two principal axes."""
    states, carries = hidden_and_carries(model, examples)
    flat = states.flatten(0, 1)
    centred = flat - flat.mean(0)
    _, singular, axes = torch.linalg.svd(centred, full_matrices=False)
    points = centred @ axes[:2].T
    steps = torch.arange(states.shape[1]).repeat(states.shape[0])
    explained = (singular**2 / (singular**2).sum())[:2]
    return {
        "x": rounded(points[:, 0]),
        "y": rounded(points[:, 1] if points.shape[1] > 1 else torch.zeros(len(flat))),
        "carry": carries.flatten().tolist(),
        "step": steps.tolist(),
        "explained": explained.tolist(),
    }


def rounded(tensor: torch.Tensor):
    """Nested lists of floats at 4 decimals, small enough for study.json."""
    return (
        [round(v, 4) for v in tensor.flatten().tolist()]
        if tensor.dim() <= 1
        else [rounded(row) for row in tensor]
    )


def constructed_section(pairs: AllPairs) -> dict:
    model = constructed_rnn()
    long_sums = make_examples(1000, 100, LENGTH_SEED + 1)
    return {
        "parameters": count_parameters(model),
        "exhaustive": pairs.score(model),
        "random_100_digit_exact_match": exact_match(model, long_sums),
        "random_100_digit_examples": len(long_sums),
        "nines_plus_one_100_digits": exact_match(model, all_nines_plus_one(100)),
        "weights": {k: rounded(v) for k, v in model.state_dict().items()},
    }


def hidden_section(config: StudyConfig, by_size: dict, pairs: AllPairs) -> dict:
    rows = []
    for size, states in by_size.items():
        accuracies = [pairs.exact_match(rnn_from_state(state)) for state in states]
        rows.append(
            {
                "hidden_size": size,
                "parameters": count_parameters(build_model("rnn", hidden_size=size)),
                "exhaustive_exact_match": summarize(accuracies),
            }
        )
    exact_sizes = [
        r["hidden_size"] for r in rows if r["exhaustive_exact_match"]["max"] == 1
    ]
    return {
        "smallest_exact_hidden_size": min(exact_sizes) if exact_sizes else "none",
        "lr": config.hidden_lr,
        "epochs": config.hidden_epochs,
        "seeds": config.hidden_seeds,
        "sizes": rows,
        "constructed_parameters": count_parameters(constructed_rnn()),
    }


def balanced_examples(num_examples: int, num_digits: int, seed: int) -> Examples:
    """Sums whose column sums a_t + b_t are uniform on 0..18, not triangular.

    With uniform digits a column sums to 9 + 9 only once in 100 draws, so the
    case 9 + 9 + carry = 19 is rare in 500 examples; here every column sum is
    as frequent as every other.
    """
    generator = torch.Generator().manual_seed(seed)
    shape = (num_examples, num_digits)
    column = torch.randint(0, 19, shape, generator=generator)
    low, high = (column - 9).clamp(min=0), column.clamp(max=9)
    a = low + (torch.rand(shape, generator=generator) * (high - low + 1)).long()
    digits = torch.stack([a, column - a], dim=2)
    return Examples(digits.float(), labels_for(digits))


def train_recipe(config: StudyConfig) -> list:
    recipe = config.recipe
    draw = balanced_examples if recipe.balanced else make_examples
    examples = draw(recipe.train_examples + 500, recipe.num_digits, RECIPE_DATA_SEED)
    n = recipe.train_examples
    splits = Splits(
        examples.take(0, n), examples.take(n, n + 100), examples.take(n + 100, n + 500)
    )
    train_config = replace(
        sweep_config("rnn", recipe.epochs, num_digits=recipe.num_digits),
        batch_size=recipe.batch_size,
        loss_threshold=recipe.loss_threshold,
    )
    seeds = range(config.seeds)
    return train_stacked(
        "rnn", seeds, train_config, splits, lrs=[recipe.lr] * config.seeds
    )


def recipe_section(
    config: StudyConfig, runs: list, pairs: AllPairs, lengths: dict
) -> dict:
    models = [model_from_run(run) for run in runs]
    scores = [pairs.exact_match(model) for model in models]
    return {
        "config": asdict(config.recipe),
        "parameters": count_parameters(models[0]),
        "exhaustive_exact_match": scores,
        "seeds": len(scores),
        "seeds_exact": sum(score == 1.0 for score in scores),
        "epochs_run": [run.epochs_run for run in runs],
        "length_generalization": lengths,
    }


# --- the whole study ----------------------------------------------------------


def run_study(config: StudyConfig, results_dir: Path) -> dict:
    """Run every section and return the study's results."""
    started, started_cpu = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)
    pairs = AllPairs()
    splits = article_splits()
    timings = {}

    def timed(name, function, *args):
        begun = time.perf_counter()
        value = function(*args)
        timings[name] = round(time.perf_counter() - begun, 2)
        log.info("study | %s done in %.1f s", name, timings[name])
        return value

    # train: learning-rate sweeps, hidden sizes, mixed lengths, the recipe
    sweeps = {
        name: timed(f"train {name} sweep", train_lr_sweep, name, config, splits)
        for name in ("mlp", "rnn")
    }
    by_size = timed("train hidden sizes", train_hidden_sizes, config, splits)
    mixed_runs = timed("train mixed lengths", train_mixed, config)
    recipe_runs = timed("train recipe", train_recipe, config)

    # evaluate
    study = {"seeds": timed("seeds", seeds_section, results_dir, pairs)}
    study["lr_sweep"] = lr_sweep_section(config, sweeps)
    best = {
        name: [
            model_from_run(run)
            for run in sweeps[name][study["lr_sweep"]["models"][name]["best_lr"]]
        ]
        for name in ("mlp", "rnn")
    }
    recipe_models = [model_from_run(run) for run in recipe_runs]
    study["exhaustive"] = timed(
        "exhaustive", exhaustive_section, study, best, recipe_models, pairs
    )
    length_groups = {
        "rnn_3_digits": best["rnn"],
        f"rnn_1_to_{config.mixed_digits}_digits": [
            model_from_run(run) for run in mixed_runs
        ],
        "recipe": recipe_models,
        "constructed": [constructed_rnn()],
    }
    study["length_generalization"] = timed(
        "lengths", length_section, config, length_groups
    )
    best_rnn = max(best["rnn"], key=pairs.exact_match)
    probe_models = {
        "untrained": seeded_model("rnn", 0).eval(),
        "trained": best_rnn,
        "recipe": max(recipe_models, key=pairs.exact_match),
        "constructed": constructed_rnn(),
    }
    study["carry_probe"] = timed("probe", probe_section, config, probe_models)
    study["constructed"] = timed("constructed", constructed_section, pairs)
    study["hidden_size_sweep"] = timed(
        "hidden sizes", hidden_section, config, by_size, pairs
    )
    study["recipe"] = recipe_section(
        config, recipe_runs, pairs, study["length_generalization"]["groups"]["recipe"]
    )
    study["run"] = {
        "config": asdict(config),
        "wall_time_s": round(time.perf_counter() - started, 1),
        # CPU time of this process: what the run needs of one idle core, a
        # steadier measure than wall time on a machine shared with other jobs
        "cpu_time_s": round(time.process_time() - started_cpu, 1),
        "timings_s": timings,
        "threads": torch.get_num_threads(),
    }
    return study


def exhaustive_section(study, best, recipe_models, pairs: AllPairs) -> dict:
    lr = {name: study["lr_sweep"]["models"][name]["best_lr"] for name in best}
    section = {
        "examples": len(pairs.examples),
        "groups": {
            f"{name}_best_lr": {
                "lr": lr[name],
                **group_scores([pairs.score(m) for m in models]),
            }
            for name, models in best.items()
        },
    }
    section["groups"]["recipe"] = group_scores([pairs.score(m) for m in recipe_models])
    section["groups"]["constructed"] = group_scores([pairs.score(constructed_rnn())])
    return section


def train_mixed(config: StudyConfig) -> list:
    """RNNs trained on 5-digit sums: each prefix of one is a shorter sum."""
    splits = article_splits(num_digits=config.mixed_digits)
    train_config = sweep_config(
        "rnn", config.sweep_epochs, num_digits=config.mixed_digits
    )
    return train_stacked(
        "rnn",
        range(config.seeds),
        train_config,
        splits,
        lrs=[config.mixed_lr] * config.seeds,
    )


# --- command line -------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a tiny version in seconds, for tests"
    )
    parser.add_argument(
        "--results",
        type=path_option,
        default=None,
        help="an existing results folder: its metrics.json (of `nox -s train`) "
        "gives the seeds section, which is left out without it; study.json is "
        f"written there (default: {DEFAULT_RESULTS_DIR}, made if missing)",
    )


def check_arguments(args) -> None:
    """Refuse a --results folder that does not exist, before any work.

    The folder is named for reading too, so a typo must not become a new folder
    holding a study without trained models; only the default is made.
    """
    if args.results is None:
        args.results = DEFAULT_RESULTS_DIR
    elif not args.results.exists():
        raise ConfigError(
            f"--results {str(args.results)!r} does not exist; name the folder "
            "that `nox -s train` wrote (default: build/results)"
        )


def run(args) -> int:
    config = QUICK if args.quick else StudyConfig()
    try:
        load_metrics(args.results)
    except ResultsError as error:
        # the study runs without them; say so now, not minutes later
        log.warning(
            "study | %s; until then the seeds section is left out, the rest runs",
            error,
        )
    study = run_study(config, args.results)
    write_json(Path(args.results) / "study.json", study)
    log.info(
        "wrote %s in %.1f s",
        Path(args.results) / "study.json",
        study["run"]["wall_time_s"],
    )
    return 0
