"""Training configuration: one frozen dataclass, and parsing of option values."""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

# These two live here, not in data.py and models.py, because those import
# PyTorch: the command line checks its input before spending seconds on that.
MODEL_NAMES = ("mlp", "rnn")
# The split is drawn from its own generator, seeded apart from every model
# seed, so that changing a model setting never moves an example between splits.
DATA_SEED = 20240601
DEVICES = ("auto", "cpu", "cuda")
MAX_SEED = 2**31 - 1
MAX_SEEDS_PER_RUN = 10_000
# ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
SEED_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+))?")


class ConfigError(ValueError):
    """A setting that is out of range; its message says what is accepted."""


class SettingError(ConfigError):
    """One named setting out of range: ``name=value problem``."""

    def __init__(self, name: str, value, problem: str):
        super().__init__(f"{name}={value!r} {problem}")
        self.name, self.value, self.problem = name, value, problem

    def as_option(self) -> ConfigError:
        """The same error naming the option that gave the value (--batch-size)."""
        option = "--" + self.name.replace("_", "-")
        return ConfigError(f"{option} {self.value!r} {self.problem}")


@dataclass(frozen=True)
class TrainConfig:
    """The article's training framework; defaults are the article's settings."""

    models: tuple[str, ...] = MODEL_NAMES
    seeds: tuple[int, ...] = tuple(range(10))
    num_digits: int = 3
    hidden_size: int | None = None  # None: the article's size for each model
    epochs: int = 20_000
    lr: float = 1e-4
    # The article does not give its batch size; 32 reproduces its numbers.
    batch_size: int = 32
    loss_threshold: float = 1e-3  # stop once the epoch's training loss is below
    eval_every: int = 100  # epochs between points of the learning curves
    device: str = "auto"
    # One thread measured fastest for these tiny models (see the benchmark).
    threads: int = 1
    data_seed: int = DATA_SEED

    def __post_init__(self):
        validate(self)

    def to_dict(self) -> dict:
        settings = asdict(self)
        settings["models"] = list(self.models)
        settings["seeds"] = list(self.seeds)
        return settings


def validate(config: TrainConfig) -> None:
    """Raise ConfigError naming the first setting that is out of range."""
    if not config.models:
        raise ConfigError("models: give at least one of mlp, rnn")
    for name in config.models:
        if name not in MODEL_NAMES:
            raise ConfigError(f"model {name!r} is unknown; choose mlp, rnn or both")
    if not config.seeds:
        raise ConfigError("seeds: give at least one seed")
    for seed in config.seeds:
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed {seed} is out of range; use 0..{MAX_SEED}")
    _check_int("num_digits", config.num_digits, 1, 1000)
    if config.hidden_size is not None:
        _check_int("hidden_size", config.hidden_size, 1, 4096)
    _check_int("epochs", config.epochs, 1, 10_000_000)
    _check_int("batch_size", config.batch_size, 1, 1_000_000)
    _check_int("eval_every", config.eval_every, 1, 10_000_000)
    _check_int("threads", config.threads, 1, 1024)
    _check_positive_float("lr", config.lr, upper=10.0)
    _check_positive_float(
        "loss_threshold", config.loss_threshold, upper=100.0, zero_ok=True
    )
    if config.device not in DEVICES:
        raise ConfigError(
            f"device {config.device!r} is unknown; choose auto, cpu or cuda"
        )


def _check_int(name, value, low, high):
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not low <= value <= high
    ):
        raise SettingError(
            name, value, f"is out of range; use an integer in {low}..{high}"
        )


def _check_positive_float(name, value, upper, zero_ok=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(name, value, "is not a number")
    if not math.isfinite(value):
        raise SettingError(name, value, "is not finite; give a number such as 1e-4")
    low_ok = value >= 0 if zero_ok else value > 0
    if not low_ok or value > upper:
        bound = ">= 0" if zero_ok else "> 0"
        raise SettingError(
            name, value, f"is out of range; use a number {bound} and <= {upper}"
        )


def parse_seeds(text: str) -> tuple[int, ...]:
    """Parse one seed ("3"), a range ("0-9") or a list ("0,3,7" or "0-4,9")."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ConfigError(
                f"seeds {text!r} has an empty item; write e.g. 0, 0-9 or 0,3,7"
            )
        match = SEED_ITEM.fullmatch(part)
        if match is None:
            raise ConfigError(
                f"seeds {text!r}: {part!r} is not a seed or range like 0-9"
            )
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last < first:
            raise ConfigError(f"seeds {text!r}: range {part!r} runs backwards")
        if last - first + 1 + len(seeds) > MAX_SEEDS_PER_RUN:
            raise ConfigError(f"seeds {text!r}: more than {MAX_SEEDS_PER_RUN} seeds")
        seeds.extend(range(first, last + 1))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {text!r} lists a seed twice")
    return tuple(seeds)


def path_option(text: str) -> Path:
    """argparse type of a file or folder option; refuses a path without a name.

    "", ".", "/" and ".." name no entry of their own: a results folder there
    would be the working folder itself (replaced whole) or one above it.
    """
    path = Path(text)
    if path.name in ("", ".."):
        raise argparse.ArgumentTypeError(
            f"{text!r} names no file or folder; give a path ending in a name: ./out"
        )
    return path


def file_option(default_name: str):
    """argparse type of an output file: a folder means ``folder/default_name``.

    A folder is a path that exists as one or ends in a separator ("out/").
    """

    def output_file(text: str) -> Path:
        if text.endswith("/") or (text and Path(text).is_dir()):
            return Path(text) / default_name
        return path_option(text)

    return output_file
