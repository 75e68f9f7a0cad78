"""The command line: ``python -m carrydemo train --model rnn --seeds 0-9``."""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib
import json
import logging
import math
import multiprocessing
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

# No PyTorch up here: it takes seconds to load, and bad input should be
# reported at once. The commands import it when they start working.
from carrydemo.config import ConfigError, TrainConfig, parse_seeds
from carrydemo.results import (
    DEFAULT_RESULTS_DIR,
    ResultsError,
    checkpoint_for_tests,
    load_metrics,
    remove_stale_staging,
    results_lock,
    training_code_hash,
    write_results,
)

log = logging.getLogger("carrydemo")
DEFAULTS = TrainConfig()
ENGINES = ("stacked", "plain")
CHECKPOINT_DIR = ".checkpoints"  # inside the results folder


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line and exits with status 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read "-1e-4" and "-inf" as values (to be refused as numbers out of
        # range), not as unknown options that swallow the value before them.
        self._negative_number_matcher = re.compile(r"^-(\d|\.\d|inf|nan)", re.I)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_model(text: str) -> tuple[str, ...]:
    if text == "both":
        return ("mlp", "rnn")
    if text in ("mlp", "rnn"):
        return (text,)
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a model; choose mlp, rnn or both"
    )


def parse_seed_option(text: str) -> tuple[int, ...]:
    try:
        return parse_seeds(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=parse_model,
        default=DEFAULTS.models,
        help="mlp, rnn or both (default: both)",
    )
    parser.add_argument(
        "--seeds",
        type=parse_seed_option,
        default=DEFAULTS.seeds,
        help="one seed (0), a range (0-9) or a list (0,3,7) (default: 0-9)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=DEFAULTS.epochs,
        help=f"most epochs to train (default: {DEFAULTS.epochs})",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=DEFAULTS.lr,
        help=f"Adam learning rate (default: {DEFAULTS.lr:g})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS.batch_size,
        help=f"mini-batch size (default: {DEFAULTS.batch_size})",
    )
    parser.add_argument(
        "--loss-threshold",
        type=float,
        default=DEFAULTS.loss_threshold,
        help="stop once an epoch's training loss is below this "
        f"(default: {DEFAULTS.loss_threshold:g})",
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=DEFAULTS.eval_every,
        help=f"epochs between learning-curve points (default: {DEFAULTS.eval_every})",
    )
    parser.add_argument(
        "--num-digits",
        type=int,
        default=DEFAULTS.num_digits,
        help=f"digits per number (default: {DEFAULTS.num_digits})",
    )
    parser.add_argument(
        "--hidden-size",
        type=int,
        default=None,
        help="hidden units (default: the article's, 20 for mlp, 21 for rnn)",
    )
    parser.add_argument(
        "--device",
        default=DEFAULTS.device,
        help="auto, cpu or cuda (default: auto: cuda when present)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULTS.threads,
        help=f"CPU threads for PyTorch (default: {DEFAULTS.threads}, measured fastest)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_RESULTS_DIR,
        help=f"results folder (default: {DEFAULT_RESULTS_DIR})",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="stacked",
        help="stacked: all seeds of a model in one run; plain: the reference "
        "loop, one model at a time (default: stacked)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="processes, one model each (default: 0, one per model up to the "
        "number of CPUs)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="train even when the results are up to date",
    )
    add_wait_argument(parser)


def add_wait_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help="if another command is writing results, wait for it (default: stop)",
    )


def check_out_dir(path: Path) -> None:
    """Refuse an output folder that is a file, or lies under one, before work."""
    for folder in (path, *path.parents):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(
                f"--out {str(path)!r}: {str(folder)!r} is a file, not a folder"
            )


# Commands kept in modules of their own: name -> (module, help). A module has
# add_arguments(parser) and run(args), and is imported only when its command
# is chosen, so that one command's imports (plotly, PyTorch) slow no other.
COMMANDS = {
    "figures": ("carrydemo.figures", "draw the site's figures"),
}


def build_parser(chosen: str | None = None) -> ArgumentParser:
    """The parser; of the module commands only ``chosen`` gets its options
    (all of them when ``chosen`` is None)."""
    parser = ArgumentParser(prog="carrydemo", description=__doc__.split(":")[0] + ".")
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=ArgumentParser
    )
    train = commands.add_parser(
        "train", help="train the models and write build/results/"
    )
    add_train_arguments(train)
    for name, (module, help_text) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text)
        if chosen in (None, name):
            importlib.import_module(module).add_arguments(command)
            add_wait_argument(command)
    return parser


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand: the first argument that is not an option."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def run_module_command(args) -> int:
    """Check the folders, take the build/ lock if it writes, and run it."""
    module = importlib.import_module(COMMANDS[args.command][0])
    if hasattr(args, "results"):
        load_metrics(args.results)  # damaged or stale results stop it here
    if not hasattr(args, "out"):
        return module.run(args)
    check_out_dir(args.out)
    with results_lock(args.out, wait=args.wait):
        return module.run(args)


def config_from_args(args) -> TrainConfig:
    return TrainConfig(
        models=args.model,
        seeds=args.seeds,
        num_digits=args.num_digits,
        hidden_size=args.hidden_size,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        loss_threshold=args.loss_threshold,
        eval_every=args.eval_every,
        device=args.device,
        threads=args.threads,
    )


def run_train(args) -> int:
    config = config_from_args(args)
    check_train_options(args)
    check_device(config.device)
    with results_lock(args.out, wait=args.wait):
        remove_stale_staging(args.out)
        return train_and_write(config, args)


def check_train_options(args) -> None:
    """Refuse options that TrainConfig does not hold, before anything is written."""
    if args.jobs < 0 or args.jobs > 64:
        raise ConfigError(f"jobs={args.jobs} is out of range; use 0 (auto) to 64")
    check_out_dir(args.out)


def check_device(name: str) -> None:
    """Refuse cuda where there is none before anything is written."""
    if name != "cpu":
        from carrydemo.train import resolve_device

        resolve_device(name)


def train_and_write(config: TrainConfig, args) -> int:
    import torch

    from carrydemo.train import resolve_device

    device = resolve_device(config.device)
    torch.set_num_threads(config.threads)
    key = cache_key(config, args.engine)
    if not args.force and results_are_current(args.out, config, args.engine):
        log.info(
            "%s is up to date (same configuration and training code); --force retrains",
            args.out,
        )
        return 0
    started = time.perf_counter()

    # train every model, one process each when there are CPUs for it
    checkpoint_for_tests("training")
    jobs = args.jobs or min(len(config.models), os.cpu_count() or 1)
    jobs = min(jobs, len(config.models))
    tasks = [
        (name, config, args.engine, checkpoint_path(args.out, key, name))
        for name in config.models
    ]
    if jobs > 1:
        context = multiprocessing.get_context("spawn")
        with context.Pool(jobs, exit_with_parent, (os.getpid(),)) as pool:
            trained = pool.starmap(train_model, tasks)
    else:
        trained = [train_model(*task) for task in tasks]
    runs_by_model = dict(zip(config.models, trained, strict=True))
    log_outcomes(runs_by_model)

    # write everything in one step, then drop the checkpoints
    wall_time = time.perf_counter() - started
    manifest = build_manifest(config, device, wall_time)
    manifest.update(engine=args.engine, processes=jobs, cache_key=key)
    parameters = {name: count_model_parameters(name, config) for name in config.models}
    write_results(args.out, config, runs_by_model, parameters, manifest)
    for *_, path in tasks:
        path.unlink(missing_ok=True)
    log.info("wrote %s in %.1f s", args.out, wall_time)
    return 0


def exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: a worker ends with its run, even one killed by SIGKILL,
    so that no orphan trains on and writes checkpoints beside a newer run."""
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: no such guard
        return
    if os.getppid() != parent_pid:  # the run died before prctl took effect
        os._exit(1)


def train_model(name: str, config: TrainConfig, engine: str, checkpoint: Path):
    """Train every seed of one model; runs in a worker process when jobs > 1."""
    checkpoint_for_tests(f"training-{name}")
    import torch

    from carrydemo.data import article_splits
    from carrydemo.stacked import train_stacked
    from carrydemo.train import train_plain

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(config.threads)
    splits = article_splits(config.num_digits, config.data_seed)
    if engine == "plain":
        return [train_plain(name, seed, config, splits) for seed in config.seeds]
    return train_stacked(name, config.seeds, config, splits, checkpoint_path=checkpoint)


def count_model_parameters(name: str, config: TrainConfig) -> int:
    from carrydemo.models import count_parameters
    from carrydemo.train import seeded_model

    return count_parameters(
        seeded_model(name, 0, config.num_digits, config.hidden_size)
    )


def log_outcomes(runs_by_model: dict) -> None:
    for runs in runs_by_model.values():
        for run in runs:
            report_non_finite(run)
            log.info(
                "%s seed %d: test exact-match %.2f%% after %d epochs (%s)",
                run.model,
                run.seed,
                100 * run.test_accuracy,
                run.epochs_run,
                run.stop_reason,
            )


def cache_key(config: TrainConfig, engine: str) -> str:
    """Key of a training run: its configuration, engine and training code."""
    text = json.dumps([config.to_dict(), engine, training_code_hash()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def results_are_current(out_dir: Path, config: TrainConfig, engine: str) -> bool:
    """Whether ``out_dir`` holds intact results of this configuration, engine
    and training code (metrics.json records the first two, the manifest the
    engine)."""
    try:
        metrics = load_metrics(out_dir, check_code=True)
        manifest = json.loads((Path(out_dir) / "manifest.json").read_text())
    except (ResultsError, OSError, ValueError):
        return False
    return metrics["config"] == config.to_dict() and manifest.get("engine") == engine


def checkpoint_path(out_dir: Path, key: str, name: str) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / f"{key}-{name}.pt"


def report_non_finite(run) -> None:
    """Say which member diverged, and when; the other members are kept."""
    if run.stop_reason == "non_finite" or not math.isfinite(run.final_train_loss):
        log.warning(
            "%s seed %d: training loss became %r at epoch %d; "
            "kept as a failed run (stop_reason non_finite), the others go on",
            run.model,
            run.seed,
            run.final_train_loss,
            run.epochs_run,
        )


def build_manifest(config: TrainConfig, device, wall_time: float) -> dict:
    import numpy
    import safetensors
    import torch

    from carrydemo.results import training_code_hash

    return {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "safetensors": safetensors.__version__,
        },
        "seeds": list(config.seeds),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "wall_time_s": round(wall_time, 3),
        "git_commit": git_commit(),
        "code_hash": training_code_hash(),
    }


def git_commit() -> str | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty.strip() else "")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs."""


def raise_terminated(signum, frame):
    raise Terminated


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, raise_terminated)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(chosen_command(argv) or "").parse_args(argv)
    try:
        if args.command == "train":
            return run_train(args)
        return run_module_command(args)
    except (ConfigError, ResultsError) as error:
        print(f"carrydemo: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        name = "terminated" if isinstance(interrupt, Terminated) else "interrupted"
        print(f"carrydemo: {name}; earlier results are unchanged", file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130
