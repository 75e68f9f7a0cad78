"""Export the trained models as JSON for the forward pass of the "Try it" page.

``python -m carrydemo webexport --results build/results --out models.json``
writes the file; the docs build adds it to the site itself (``on_files`` below,
listed under ``hooks:`` in mkdocs.yml), so the page always matches the results.

Every tensor is stored under its PyTorch ``state_dict`` name as a shape and a
flat row-major list of numbers. Each number is the shortest decimal that reads
back as the same float32, so ``Math.fround`` in the page recovers PyTorch's
weights exactly, and equal weights give equal bytes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from carrydemo.config import file_option
from carrydemo.models import MODEL_NAMES
from carrydemo.results import (
    DEFAULT_RESULTS_DIR,
    add_results_argument,
    load_metrics,
    load_trained_model,
)

FORMAT_VERSION = 1
OUT_IS_FILE = True  # --out names the file; the command line locks its folder
SITE_PATH = "assets/models.json"  # where the page's script looks for it
# The RNN reads numbers of any length; the page caps them so that the hidden
# state table stays readable.
MAX_RNN_DIGITS = 30
RESULTS_ENV = "CARRYDEMO_RESULTS"
HELP = "write the trained models as JSON for the Try it page"


def float32_list(values) -> list[float]:
    """Return float32 values as the shortest decimals that read back the same."""
    return [float(np.format_float_positional(v, unique=True)) for v in values]


def export_tensor(tensor) -> dict:
    array = tensor.detach().cpu().numpy().astype(np.float32)
    return {"shape": list(array.shape), "data": float32_list(array.ravel())}


def export_model(results_dir: Path, name: str, metrics: dict) -> dict:
    """One model's weights, plus what the page says about it."""
    entry = metrics["models"][name]
    network = load_trained_model(results_dir, name, seed=entry["seed"])
    return {
        "seed": entry["seed"],
        "parameters": entry["parameters"],
        "test_accuracy": entry["test_accuracy"],
        "hidden_size": network.config.hidden_size,
        "tensors": {
            key: export_tensor(value) for key, value in network.state_dict().items()
        },
    }


def export_models(results_dir: Path = DEFAULT_RESULTS_DIR) -> dict:
    """Return both trained models (first seed) as plain JSON-ready data."""
    metrics = load_metrics(results_dir)
    names = [name for name in MODEL_NAMES if name in metrics["models"]]
    return {
        "format_version": FORMAT_VERSION,
        "num_digits": metrics["config"]["num_digits"],
        "max_rnn_digits": MAX_RNN_DIGITS,
        "models": {name: export_model(results_dir, name, metrics) for name in names},
    }


def models_json(results_dir: Path = DEFAULT_RESULTS_DIR) -> bytes:
    """The exported models as compact JSON with sorted keys: equal data, equal bytes."""
    data = export_models(results_dir)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return (text + "\n").encode()


def results_dir_from_env() -> Path:
    return Path(os.environ.get(RESULTS_ENV, DEFAULT_RESULTS_DIR))


def on_files(files, config):
    """MkDocs hook: add models.json, exported from the results, to the site."""
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    from carrydemo.results import ResultsError

    try:
        content = models_json(results_dir_from_env())
    except ResultsError as error:
        raise PluginError(f"carrydemo.webexport: {error}") from None
    files.append(File.generated(config, SITE_PATH, content=content))
    return files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_results_argument(parser)
    parser.add_argument(
        "--out",
        type=file_option("models.json"),
        default=Path("models.json"),
        help="file to write; an existing folder or a path ending in / means "
        "models.json in it (default: models.json)",
    )


def run(args) -> int:
    from carrydemo.results import write_bytes

    write_bytes(args.out, models_json(args.results))
    return 0
