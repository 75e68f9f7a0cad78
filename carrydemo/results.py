"""Writing and reading a training run's results folder.

A results folder (``build/results/`` by default) holds::

    metrics.json    per model: parameters, test accuracy, epochs run, final
                    training loss, every seed's outcome; the resolved config
    curves.json     the learning curves of every model and seed
    weights/        one safetensors file per model and seed (no pickle)
    manifest.json   versions, seeds, threads, device, wall time, git commit

The folder is built beside its destination and swapped in whole, so a run
that is stopped at any moment leaves the previous results as they were.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import filelock

from carrydemo.config import path_option

# 2: metrics.json carries a hash of its own content.
SCHEMA_VERSION = 2
DEFAULT_RESULTS_DIR = Path("build/results")
TRAIN_COMMAND = "nox -s train"
PACKAGE_DIR = Path(__file__).parent
# The files whose content decides what a training run computes.
TRAINING_CODE = (
    "config.py",
    "data.py",
    "models.py",
    "train.py",
    "stacked.py",
    "kernels.py",
    "csrc/stacked_epoch.c",
)
LOCK_NAME = ".carrydemo.lock"
STAGING_INFIX = ".partial-"
# Tests set these to stop a run at a known point (see tests/test_interrupts.py).
TEST_MARKER_DIR_ENV = "CARRYDEMO_TEST_MARKER_DIR"
TEST_PAUSE_ENV = "CARRYDEMO_TEST_PAUSE_AT"


class ResultsError(RuntimeError):
    """Results that are missing, damaged or stale; says which command fixes it."""


def training_code_hash() -> str:
    """Hash of the training code, so results from other code are recognised."""
    digest = hashlib.sha256()
    for name in TRAINING_CODE:
        path = PACKAGE_DIR / name
        if path.exists():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def add_results_argument(parser) -> None:
    """--results, for the commands that read a results folder."""
    parser.add_argument(
        "--results",
        type=path_option,
        default=DEFAULT_RESULTS_DIR,
        help=f"results folder to read (default: {DEFAULT_RESULTS_DIR})",
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dumps(data) -> str:
    """JSON with sorted keys and a final newline, so equal data gives equal bytes."""
    return json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: Path, data) -> None:
    """Write JSON to a temporary name and move it into place."""
    write_bytes(path, dumps(data).encode())


def write_bytes(path: Path, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(f.name, usual_mode(0o666))
    os.replace(f.name, path)


def usual_mode(mode: int) -> int:
    """``mode`` less the umask: what open() and mkdir() would have given; the
    temporary names that make writes atomic are private (0600, 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def finite_or_none(value):
    """JSON has no NaN or infinity: a diverged value is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def content_hash(metrics: dict) -> str:
    """Hash of metrics.json without its own hash field, to detect hand edits."""
    body = {key: value for key, value in metrics.items() if key != "content_hash"}
    return hashlib.sha256(dumps(body).encode()).hexdigest()


@contextlib.contextmanager
def results_lock(out_dir: Path, wait: bool = False):
    """Hold the lock of the folder that holds ``out_dir`` for one writing command.

    Every command that writes under build/ takes it, so two runs never
    interleave their files. Without ``wait`` a second run stops at once.
    """
    lock_path = Path(out_dir).parent / LOCK_NAME
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(lock_path, timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise ResultsError(
            f"another carrydemo command is writing under {lock_path.parent} "
            f"(lock {lock_path}); wait for it, or pass --wait"
        ) from None
    try:
        yield
    finally:
        lock.release()


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Delete staging folders that a killed run left beside ``out_dir``.

    Call it only while holding ``results_lock``: then no live run owns them.
    """
    out_dir = Path(out_dir)
    if not out_dir.parent.exists():
        return []
    stale = sorted(out_dir.parent.glob(f".{out_dir.name}{STAGING_INFIX}*"))
    stale += [p for p in [out_dir.with_name(out_dir.name + ".previous")] if p.exists()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def checkpoint_for_tests(stage: str) -> None:
    """Mark that a run reached ``stage`` and pause there, when a test asks to."""
    marker_dir = os.environ.get(TEST_MARKER_DIR_ENV)
    if marker_dir:
        Path(marker_dir, stage).touch()
    if os.environ.get(TEST_PAUSE_ENV) == stage:
        time.sleep(60)


def summarize(values: list[float]) -> dict:
    """Mean, standard deviation (n - 1), median, min and max of ``values``."""
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def weights_name(model: str, seed: int) -> str:
    return f"weights/{model}-seed{seed}.safetensors"


def weights_metadata(model: str, seed: int) -> dict:
    """One key only: safetensors writes several in a random order per call,
    which would make two runs' weights files differ in their bytes."""
    return {"carrydemo": json.dumps({"model": model, "seed": seed}, sort_keys=True)}


def model_metrics(runs, parameters: int) -> dict:
    """The metrics of one model: its first seed's outcome, then every seed's."""
    first = runs[0]
    accuracies = [run.test_accuracy for run in runs]
    return {
        "parameters": parameters,
        "seed": first.seed,
        "test_accuracy": first.test_accuracy,
        "epochs_run": first.epochs_run,
        "final_train_loss": finite_or_none(first.final_train_loss),
        "stop_reason": first.stop_reason,
        "test_accuracy_summary": summarize(accuracies),
        "runs": [
            {
                "seed": run.seed,
                "test_accuracy": run.test_accuracy,
                "epochs_run": run.epochs_run,
                "final_train_loss": finite_or_none(run.final_train_loss),
                "stop_reason": run.stop_reason,
                "weights": weights_name(run.model, run.seed),
            }
            for run in runs
        ],
    }


def write_results(
    out_dir: Path, config, runs_by_model: dict, parameters: dict, manifest: dict
) -> None:
    """Write a complete results folder to ``out_dir``, replacing it atomically."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}{STAGING_INFIX}")
    )
    staging.chmod(usual_mode(0o777))
    try:
        # weights first: metrics.json records their hashes
        files = {}
        for runs in runs_by_model.values():
            for run in runs:
                name = weights_name(run.model, run.seed)
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                save_file(
                    run.state,
                    staging / name,
                    metadata=weights_metadata(run.model, run.seed),
                )
                files[name] = file_sha256(staging / name)
        checkpoint_for_tests("staging")

        # learning curves, then the metrics that tie everything together
        curves = {
            model: {str(run.seed): finite_curves(run.curves) for run in runs}
            for model, runs in runs_by_model.items()
        }
        write_json(staging / "curves.json", curves)
        files["curves.json"] = file_sha256(staging / "curves.json")
        metrics = {
            "schema_version": SCHEMA_VERSION,
            "code_hash": training_code_hash(),
            "config": config.to_dict(),
            "models": {
                model: model_metrics(runs, parameters[model])
                for model, runs in runs_by_model.items()
            },
            "files": files,
        }
        metrics["content_hash"] = content_hash(metrics)
        write_json(staging / "metrics.json", metrics)
        write_json(staging / "manifest.json", manifest)
        checkpoint_for_tests("publish")
        publish_directory(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def finite_curves(curves: dict) -> dict:
    return {
        key: [finite_or_none(value) for value in values]
        for key, values in curves.items()
    }


def publish_directory(staging: Path, destination: Path) -> None:
    """Put ``staging`` at ``destination`` in one step; the old one is removed.

    Files of the old folder that ``staging`` does not replace (a study's or a
    benchmark's results) are carried over as hard links first. On Linux the two
    folders are then exchanged with renameat2(RENAME_EXCHANGE), so there is no
    moment at which ``destination`` is missing or half-written.
    """
    if not destination.exists():
        os.rename(staging, destination)
        return
    for entry in destination.iterdir():
        target = staging / entry.name
        if target.exists() or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, target, copy_function=os.link)
        else:
            os.link(entry, target)
    if not exchange_directories(staging, destination):
        backup = destination.with_name(destination.name + ".previous")
        shutil.rmtree(backup, ignore_errors=True)
        os.rename(destination, backup)
        os.rename(staging, destination)
        staging = backup
    checkpoint_for_tests("swapped")
    shutil.rmtree(staging, ignore_errors=True)


def exchange_directories(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2); False where unsupported."""
    rename_exchange = 2
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(
        at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange
    )
    return result == 0


def load_metrics(
    results_dir: Path = DEFAULT_RESULTS_DIR, check_code: bool = False
) -> dict:
    """Read and check ``metrics.json``; raise ResultsError saying how to fix it."""
    results_dir = Path(results_dir)
    path = results_dir / "metrics.json"
    if not path.exists():
        raise ResultsError(f"no results at {path}; run `{TRAIN_COMMAND}` first")
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(
            f"{path} is damaged ({error}); run `{TRAIN_COMMAND}`"
        ) from None
    if not isinstance(metrics, dict) or metrics.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(
            f"{path} was written by another version of carrydemo; run `{TRAIN_COMMAND}`"
        )
    if metrics.get("content_hash") != content_hash(metrics):
        raise ResultsError(
            f"{path} was edited or damaged after it was written "
            f"(its content hash does not match); run `{TRAIN_COMMAND}`"
        )
    for name, digest in metrics.get("files", {}).items():
        file = results_dir / name
        if not file.exists() or file_sha256(file) != digest:
            raise ResultsError(
                f"{file} is missing or does not match {path}; run `{TRAIN_COMMAND}`"
            )
    if check_code and metrics.get("code_hash") != training_code_hash():
        raise ResultsError(
            f"{path} was made by other training code; run `{TRAIN_COMMAND}`"
        )
    return metrics


def load_curves(results_dir: Path = DEFAULT_RESULTS_DIR) -> dict:
    return json.loads((Path(results_dir) / "curves.json").read_text())


def load_weights(results_dir: Path, model: str, seed: int) -> dict:
    """Load one model's tensors; safetensors never executes code."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(results_dir) / weights_name(model, seed)
    try:
        return load_file(path)
    except (OSError, SafetensorError) as error:
        raise ResultsError(
            f"{path} cannot be read as safetensors ({error}); run `{TRAIN_COMMAND}`"
        ) from None


def load_trained_model(results_dir: Path, model: str, seed: int | None = None):
    """Rebuild a trained model from its results, in eval mode, on the CPU."""
    from carrydemo.models import build_model

    metrics = load_metrics(results_dir)
    if model not in metrics["models"]:
        known = ", ".join(sorted(metrics["models"]))
        raise ResultsError(f"no model {model!r} in {results_dir}; it holds {known}")
    seed = metrics["models"][model]["seed"] if seed is None else seed
    config = metrics["config"]
    network = build_model(
        model, num_digits=config["num_digits"], hidden_size=config["hidden_size"]
    )
    path = Path(results_dir) / weights_name(model, seed)
    state = load_weights(results_dir, model, seed)
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise ResultsError(
            f"{path} does not fit the {model} model ({detail}); run `{TRAIN_COMMAND}`"
        ) from None
    return network.eval()
