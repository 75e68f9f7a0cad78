"""The command line: ``python -m carrydemo train --model rnn --seeds 0-9``."""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

# No PyTorch up here: it takes seconds to load, and bad input should be
# reported at once. The commands import it when they start working.
from carrydemo import engines
from carrydemo.config import (
    ConfigError,
    SettingError,
    TrainConfig,
    parse_seeds,
    path_option,
)
from carrydemo.results import (
    DEFAULT_RESULTS_DIR,
    ResultsError,
    checkpoint_for_tests,
    load_metrics,
    remove_stale_staging,
    results_lock,
    write_results,
)

log = logging.getLogger("carrydemo")
DEFAULTS = TrainConfig()


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
        type=path_option,
        default=DEFAULT_RESULTS_DIR,
        help=f"results folder (default: {DEFAULT_RESULTS_DIR})",
    )
    add_engine_arguments(parser)
    add_wait_argument(parser)


def add_wait_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help="if another command is writing results, wait for it (default: stop)",
    )


def check_out_dir(path: Path, is_file: bool = False, option: str = "--out") -> None:
    """Refuse an output folder (or file) that lies under a file, before work."""
    for folder in path.parents if is_file else (path, *path.parents):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(
                f"{option} {str(path)!r}: {str(folder)!r} is a file, not a folder"
            )


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=("stacked", "plain"),
        default="stacked",
        help="stacked: all seeds of a model in one run; plain: the reference "
        "loop, one model at a time (default: stacked)",
    )
    parser.add_argument(
        "--kernel",
        choices=("auto", "c", "tensor"),
        default="auto",
        help="how the stacked engine computes: c: a C kernel compiled on first "
        "use (CPU only); tensor: PyTorch operations (CPU or CUDA); auto: c on "
        "the CPU when a C compiler is there (default: auto)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="processes, one model each (default: 0: one per model up to the "
        "CPUs for runs of 2000 epochs or more, else one)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="train even when the results are up to date with the configuration "
        "and the training code",
    )


# Commands kept in modules of their own: name -> (module, help, whether it
# needs trained results). A module has add_arguments(parser) and run(args), and
# may have check_arguments(args), called before anything is written, and
# OUT_IS_FILE = True when its --out names a file rather than a folder. It is
# imported only when its command is chosen, so that one command's imports
# (plotly, PyTorch) slow no other.
COMMANDS = {
    "figures": ("carrydemo.figures", "draw the site's figures", True),
    "bench": ("carrydemo.bench", "time plain vs stacked", False),
    "study": ("carrydemo.study", "run the study beyond the article", False),
    "webexport": (
        "carrydemo.webexport",
        "write the trained models as JSON for the Try it page",
        True,
    ),
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
    for name, (module, help_text, _) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text)
        if chosen in (None, name):
            importlib.import_module(module).add_arguments(command)
            add_wait_argument(command)
    return parser


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand: the first argument that is not an option."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def run_module_command(args) -> int:
    """Check the options and folders, take the build/ lock, and run it."""
    module_name, _, needs_results = COMMANDS[args.command]
    module = importlib.import_module(module_name)
    if hasattr(module, "check_arguments"):
        module.check_arguments(args)
    if needs_results:
        load_metrics(args.results)  # missing, damaged or stale results stop here
    # it writes to --out, or else into the results folder (study.json); an
    # output file (bench.json) shares the lock of the folder that holds it
    option = "--out" if hasattr(args, "out") else "--results"
    target = getattr(args, option.removeprefix("--"))
    is_file = option == "--out" and getattr(module, "OUT_IS_FILE", False)
    check_out_dir(target, is_file, option)
    with results_lock(target.parent if is_file else target, wait=args.wait):
        return module.run(args)


def config_from_args(args) -> TrainConfig:
    """The configuration; a setting out of range is reported by its option."""
    try:
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
    except SettingError as error:
        raise error.as_option() from None


def run_train(args) -> int:
    config, jobs = check_train_arguments(args)
    with results_lock(args.out, wait=args.wait):
        remove_stale_staging(args.out)
        return train_and_write(config, args, jobs)


def check_train_arguments(args) -> tuple[TrainConfig, int]:
    """Refuse bad options before anything is written; return config and jobs."""
    config = config_from_args(args)
    if args.engine == "plain" and args.kernel != "auto":
        raise ConfigError(
            f"--kernel {args.kernel} is for the stacked engine; "
            "the plain engine takes no --kernel"
        )
    try:
        jobs = engines.number_of_jobs(args.jobs, config)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_out_dir(args.out)
    check_replaceable(args.out)
    check_device(config.device)
    return config, jobs


def check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that holds something other than results.

    A run swaps its whole results folder in; pointed by mistake at a project
    folder, it would otherwise delete that folder's files.
    """
    if not out.is_dir() or (out / "metrics.json").exists():
        return
    # hidden entries are a stopped run's checkpoints, kept for its resumption
    if any(not entry.name.startswith(".") for entry in out.iterdir()):
        raise ConfigError(
            f"--out {str(out)!r} is a folder that holds no carrydemo results; "
            "give a new or empty folder, or one an earlier run wrote"
        )


def check_device(name: str) -> None:
    """Refuse cuda where there is none before anything is written."""
    if name != "cpu":
        from carrydemo.train import resolve_device

        resolve_device(name)


def train_and_write(config: TrainConfig, args, jobs: int) -> int:
    import torch

    from carrydemo.data import article_splits
    from carrydemo.models import count_parameters
    from carrydemo.train import resolve_device, seeded_model

    device = resolve_device(config.device)
    torch.set_num_threads(config.threads)
    splits = article_splits(config.num_digits, config.data_seed)
    current = engines.results_are_current(args.out, config, args.engine, args.kernel)
    if current and not args.force:
        log.info("%s is up to date; --force retrains", args.out)
        return 0
    engine = engines.Engine(args.engine, engines.resolve_kernel(args, device))
    started = time.perf_counter()

    # train every model and seed
    checkpoint_for_tests("training")
    runs_by_model = engines.train_models(config, engine, jobs, args.out)
    parameters = {}
    for name in config.models:
        model = seeded_model(name, 0, config.num_digits, config.hidden_size)
        parameters[name] = count_parameters(model)
        for run in runs_by_model[name]:
            report_non_finite(run)
            log.info(
                "%s seed %d: test %d/%d = %.2f%% after %d epochs (%s)",
                name,
                run.seed,
                round(run.test_accuracy * len(splits.test)),
                len(splits.test),
                100 * run.test_accuracy,
                run.epochs_run,
                describe_stop(run, config.loss_threshold),
            )

    # write everything in one step
    wall_time = time.perf_counter() - started
    manifest = build_manifest(config, device, wall_time)
    manifest.update(
        engine=engine.name,
        kernel=engine.kernel,
        engine_label=engine.label,
        processes=jobs,
    )
    write_results(args.out, config, runs_by_model, parameters, manifest)
    engines.remove_checkpoints(args.out, config, engine)
    log.info("wrote %s in %.1f s", args.out, wall_time)
    return 0


def describe_stop(run, loss_threshold: float) -> str:
    """Why a run stopped, as the progress line says it."""
    if run.stop_reason == "loss_threshold":
        return f"stopped: loss below {loss_threshold:g}"
    if run.stop_reason == "non_finite":
        return f"stopped: loss became {run.final_train_loss}"
    return "ran all epochs"


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
    engines.show_progress()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(chosen_command(argv) or "").parse_args(argv)
    previous_handler = signal.signal(signal.SIGTERM, raise_terminated)
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
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
