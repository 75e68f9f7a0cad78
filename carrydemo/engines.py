"""Train every model and seed of a configuration: engine, processes, caching.

``python -m carrydemo train`` runs here. The stacked engine trains all seeds of
one model in one run (``carrydemo.stacked``); the plain engine is the
reference loop, one model at a time (``carrydemo.train``). With two models and
two CPUs the models train in two processes at once. A run whose configuration,
engine and training code equal those of the results already in place does no
work; a run that is stopped resumes from its checkpoints when started again.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
from pathlib import Path
from typing import NamedTuple

from carrydemo.config import ConfigError, TrainConfig
from carrydemo.results import checkpoint_for_tests

log = logging.getLogger(__name__)
ENGINES = ("stacked", "plain")
CHECKPOINT_DIR = ".checkpoints"  # inside the results folder
MAX_JOBS = 64
MIN_EPOCHS_FOR_PROCESSES = 2000


class Engine(NamedTuple):
    """What trains: "stacked" or "plain", and for "stacked" how it computes
    ("c" or "tensor"; None for "plain")."""

    name: str
    kernel: str | None

    @property
    def label(self) -> str:
        """How the site names it."""
        if self.name == "plain":
            return "the plain loop, one model at a time"
        how = "its C kernel" if self.kernel == "c" else "PyTorch tensor operations"
        return f"the stacked engine with {how}"


def resolve_kernel(args, device) -> str | None:
    """The stacked engine's kernel for ``--kernel``: "auto" becomes "c" on the
    CPU when the C kernel builds (compiling it now if need be), else "tensor"."""
    if args.engine == "plain":
        return None
    from carrydemo.kernels import KernelError
    from carrydemo.stacked import choose_kernel

    try:
        library = choose_kernel(args.kernel, device)
    except KernelError as error:
        raise ConfigError(
            f"--kernel c: the C kernel is not available here ({error}); "
            "use --kernel auto or tensor"
        ) from None
    except ValueError as error:
        raise ConfigError(f"--kernel {args.kernel}: {error}") from None
    return "c" if library is not None else "tensor"


def results_are_current(
    out_dir: Path, config: TrainConfig, engine: str, kernel: str
) -> bool:
    """Whether ``out_dir`` holds intact results of this configuration and code.

    metrics.json records the configuration (``config.to_dict()``) and the hash
    of the training code; the manifest records the engine and its kernel. A
    ``kernel`` of "auto" takes results of either kernel: they differ only in
    rounding, and a machine that cannot build the C kernel today should not
    throw away what it trained yesterday.
    """
    from carrydemo.results import ResultsError, load_metrics

    try:
        metrics = load_metrics(out_dir, check_code=True)
        manifest = json.loads((Path(out_dir) / "manifest.json").read_text())
    except (ResultsError, OSError, ValueError):
        return False
    same_kernel = engine == "plain" or kernel in ("auto", manifest.get("kernel"))
    return (
        metrics["config"] == config.to_dict()
        and manifest.get("engine") == engine
        and same_kernel
    )


def cache_key(config: TrainConfig, engine: Engine) -> str:
    """Key of a training run: its configuration, engine and training code."""
    from carrydemo.results import training_code_hash

    text = json.dumps(
        [config.to_dict(), list(engine), training_code_hash()], sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_path(out_dir: Path, config: TrainConfig, engine: Engine, name: str):
    return Path(out_dir) / CHECKPOINT_DIR / f"{cache_key(config, engine)}-{name}.pt"


def number_of_jobs(requested: int, config: TrainConfig) -> int:
    """Processes to use; 0 asks for one per model, up to the CPUs.

    A worker process costs a few seconds to start (it loads PyTorch again), so
    short runs use one. The load average is not consulted: it lags by a
    minute, and a brief job elsewhere made a 4-minute run take the slow path.
    """
    if not 0 <= requested <= MAX_JOBS:
        raise ValueError(
            f"jobs={requested} is out of range; use 0 (auto) to {MAX_JOBS}"
        )
    if requested:
        return min(requested, len(config.models))
    if config.epochs < MIN_EPOCHS_FOR_PROCESSES:
        return 1
    return max(1, min(len(config.models), os.cpu_count() or 1))


def train_models(config: TrainConfig, engine: Engine, jobs: int, out_dir: Path) -> dict:
    """Train every model of ``config``; return {model: [RunResult per seed]}."""
    tasks = [
        (name, config, engine, checkpoint_path(out_dir, config, engine, name))
        for name in config.models
    ]
    if jobs > 1:
        # spawn, not fork: a forked PyTorch can hang on its thread pools
        context = multiprocessing.get_context("spawn")
        with workers_ignoring_ctrl_c():
            pool = context.Pool(jobs, exit_with_parent, (os.getpid(),))
        with pool:
            trained = pool.starmap(train_model, tasks)
    else:
        trained = [train_model(*task) for task in tasks]
    return dict(zip(config.models, trained, strict=True))


@contextlib.contextmanager
def workers_ignoring_ctrl_c():
    """Start processes that ignore SIGINT from their first instruction (an
    ignored signal stays ignored across exec, and Python keeps it so).

    Ctrl-C reaches every process of the terminal's group; the run alone
    handles it, stopping its workers and saying so in one line, instead of
    each worker printing a traceback of its own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def remove_checkpoints(out_dir: Path, config: TrainConfig, engine: Engine) -> None:
    for name in config.models:
        checkpoint_path(out_dir, config, engine, name).unlink(missing_ok=True)


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


def show_progress() -> None:
    """carrydemo's progress lines, plain, on stderr, once per process.

    Only carrydemo's loggers print at INFO: the root logger keeps its
    WARNING, so that other libraries' INFO lines (PyTorch logs some at exit)
    stay out of the output. Where logging is set up already (an application,
    pytest), it is left as it is.
    """
    logger = logging.getLogger("carrydemo")
    logger.setLevel(logging.INFO)
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is when a line is written."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def train_model(name: str, config: TrainConfig, engine: Engine, checkpoint: Path):
    """Train every seed of one model; runs in a worker process when jobs > 1."""
    checkpoint_for_tests(f"training-{name}")
    import torch

    from carrydemo.data import article_splits
    from carrydemo.stacked import train_stacked
    from carrydemo.train import train_plain

    show_progress()
    torch.set_num_threads(config.threads)
    splits = article_splits(config.num_digits, config.data_seed)
    if engine.name == "plain":
        return [train_plain(name, seed, config, splits) for seed in config.seeds]
    return train_stacked(
        name,
        config.seeds,
        config,
        splits,
        checkpoint_path=checkpoint,
        kernel=engine.kernel,
    )
