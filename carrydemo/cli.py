"""The command line: ``python -m carrydemo train --model rnn --seeds 0-9``."""

from __future__ import annotations

import argparse
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from carrydemo import bench, engines, figures, study
from carrydemo.config import ConfigError, TrainConfig, parse_seeds
from carrydemo.data import article_splits
from carrydemo.models import count_parameters
from carrydemo.results import DEFAULT_RESULTS_DIR, ResultsError, write_results
from carrydemo.train import resolve_device, seeded_model

log = logging.getLogger("carrydemo")
DEFAULTS = TrainConfig()


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line and exits with status 2."""

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
    add_engine_arguments(parser)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=("stacked", "plain"),
        default="stacked",
        help="stacked: all seeds of a model in one run; plain: the reference "
        "loop, one model at a time (default: stacked)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="processes, one model each (default: 0: one per model up to the "
        "idle CPUs for runs of 2000 epochs or more, else one)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="train even when the results are up to date with the configuration "
        "and the training code",
    )


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="carrydemo", description=__doc__.split(":")[0] + ".")
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=ArgumentParser
    )
    train = commands.add_parser(
        "train", help="train the models and write build/results/"
    )
    add_train_arguments(train)
    figures.add_arguments(
        commands.add_parser("figures", help="draw the site's figures")
    )
    study.add_arguments(
        commands.add_parser("study", help="run the study beyond the article")
    )
    bench.add_arguments(commands.add_parser("bench", help="time plain vs stacked"))
    return parser


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
    device = resolve_device(config.device)
    torch.set_num_threads(config.threads)
    splits = article_splits(config.num_digits, config.data_seed)
    try:
        jobs = engines.number_of_jobs(args.jobs, config)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not args.force and engines.results_are_current(args.out, config, args.engine):
        log.info("%s is up to date; --force retrains", args.out)
        return 0
    started = time.perf_counter()

    # train every model and seed
    runs_by_model = engines.train_models(config, args.engine, jobs, args.out)
    parameters = {}
    for name in config.models:
        model = seeded_model(name, 0, config.num_digits, config.hidden_size)
        parameters[name] = count_parameters(model)
        for run in runs_by_model[name]:
            log.info(
                "%s seed %d: test %d/%d = %.2f%% after %d epochs (%s)",
                name,
                run.seed,
                round(run.test_accuracy * len(splits.test)),
                len(splits.test),
                100 * run.test_accuracy,
                run.epochs_run,
                run.stop_reason,
            )

    # write everything in one step
    wall_time = time.perf_counter() - started
    manifest = build_manifest(config, device, wall_time)
    manifest.update(engine=args.engine, processes=jobs)
    write_results(args.out, config, runs_by_model, parameters, manifest)
    engines.remove_checkpoints(args.out, config, args.engine)
    log.info("wrote %s in %.1f s", args.out, wall_time)
    return 0


def build_manifest(config: TrainConfig, device: torch.device, wall_time: float) -> dict:
    import numpy
    import safetensors

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


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        commands = {
            "train": run_train,
            "bench": bench.run,
            "figures": figures.run,
            "study": study.run,
        }
        return commands[args.command](args)
    except (ConfigError, ResultsError) as error:
        print(f"carrydemo: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("carrydemo: interrupted; earlier results are unchanged", file=sys.stderr)
        return 130
