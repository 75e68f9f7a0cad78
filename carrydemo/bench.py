"""Benchmark: the plain loop against the stacked trainer, ``nox -s bench``.

Both engines train the same model with the same configuration in this one
process, one after the other, and are compared in model-epochs per second
(one model trained for one epoch). Because timings on a shared machine move
with its load, only ratios measured side by side mean much; the absolute
numbers are written down with the machine's load average beside them.

The arithmetic lower bound is the time the matrix products of one epoch
would take at the machine's measured matrix-multiply throughput (one large
float32 product on the same threads): these models are so small that the
distance to that bound measures the fixed cost of every operation.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import time
from pathlib import Path

# No PyTorch up here, so that the command line starts (and refuses bad
# input) at once; the functions that work import it.
from carrydemo.config import ConfigError, SettingError, TrainConfig, file_option

log = logging.getLogger(__name__)
SCHEMA_VERSION = 2
DEFAULT_MEMBERS = (10, 50, 100)
KERNEL_NAMES = {"c": "C kernel", "tensor": "tensor operations"}
DEFAULT_OUT = Path("build/results/bench.json")
OUT_IS_FILE = True  # --out names the file; the command line locks its folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", choices=("rnn", "mlp"), default="rnn", help="(default: rnn)"
    )
    parser.add_argument(
        "--members",
        default=",".join(map(str, DEFAULT_MEMBERS)),
        help="stack sizes K to time, comma-separated (default: 10,50,100)",
    )
    parser.add_argument(
        "--epochs", type=int, default=30, help="epochs per timing (default: 30)"
    )
    parser.add_argument(
        "--plain-seeds",
        type=int,
        default=2,
        help="models the plain loop trains for its timing (default: 2)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timings per engine and size; the fastest counts (default: 3)",
    )
    parser.add_argument(
        "--kernels",
        default="auto",
        help="the stacked trainer's kernels to time, comma-separated: c, tensor "
        "(default: auto: both where the C kernel builds, else tensor)",
    )
    parser.add_argument("--threads", type=int, default=1, help="(default: 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--out",
        type=file_option(DEFAULT_OUT.name),
        default=DEFAULT_OUT,
        help="file the table goes to; an existing folder or a path ending in / "
        "means bench.json in it (default: build/results/bench.json)",
    )


def parse_members(text: str) -> list[int]:
    try:
        members = [int(part) for part in text.split(",")]
    except ValueError:
        members = []
    if not members or not all(1 <= k <= 10_000 for k in members):
        raise ConfigError(
            f"--members {text!r} is not a list of stack sizes like 10,50,100"
        )
    return members


def parse_kernels(text: str) -> list[str]:
    kernels = text.split(",")
    if text != "auto" and (
        not set(kernels) <= set(KERNEL_NAMES) or len(set(kernels)) < len(kernels)
    ):
        raise ConfigError(f"--kernels {text!r} is not auto or a list like c,tensor")
    return kernels


def check_arguments(args) -> tuple[list[int], TrainConfig]:
    """Refuse bad options before anything runs or is written."""
    parse_kernels(args.kernels)
    members = parse_members(args.members)
    if not 1 <= args.repeats <= 100:
        raise ConfigError(f"--repeats {args.repeats} is out of range; use 1..100")
    if not 1 <= args.plain_seeds <= 100:
        raise ConfigError(
            f"--plain-seeds {args.plain_seeds} is out of range; use 1..100"
        )
    try:
        config = bench_config(args, members)
    except SettingError as error:
        # eval_every follows --epochs: only settings given as options are renamed
        raise (error.as_option() if hasattr(args, error.name) else error) from None
    return members, config


def bench_config(args, members: list[int]) -> TrainConfig:
    return TrainConfig(
        models=(args.model,),
        seeds=tuple(range(max(members))),
        epochs=args.epochs,
        loss_threshold=0.0,  # every member trains every epoch
        eval_every=args.epochs,
        device=args.device,
        threads=args.threads,
    )


def run(args) -> int:
    import torch

    from carrydemo.results import write_json

    members, config = check_arguments(args)
    torch.set_num_threads(config.threads)
    # the trainers' own progress lines would bury the table
    logging.getLogger("carrydemo.stacked").setLevel(logging.WARNING)
    logging.getLogger("carrydemo.train").setLevel(logging.WARNING)
    kernels = available_kernels(parse_kernels(args.kernels), config.device)
    report = benchmark(
        args.model, config, members, args.plain_seeds, args.repeats, kernels
    )
    print_table(report)
    write_json(args.out, report)
    log.info("wrote %s", args.out)
    return 0


def available_kernels(requested: list[str], device_name: str) -> list[str]:
    """The kernels to time: "auto" is c (where it builds) and tensor."""
    from carrydemo.kernels import KernelError
    from carrydemo.stacked import choose_kernel
    from carrydemo.train import resolve_device

    device = resolve_device(device_name)
    if requested != ["auto"]:
        for kernel in requested:
            try:
                choose_kernel(kernel, device)
            except (KernelError, ValueError) as error:
                raise ConfigError(f"--kernels {kernel}: {error}") from None
        return requested
    built = choose_kernel("auto", device) is not None
    return ["c", "tensor"] if built else ["tensor"]


def benchmark(
    name: str,
    config: TrainConfig,
    members: list[int],
    plain_seeds: int,
    repeats: int,
    kernels: list[str],
):
    """Time both engines on the same work; return the table as plain data."""
    import torch

    from carrydemo.data import article_splits
    from carrydemo.stacked import train_stacked
    from carrydemo.train import resolve_device, train_plain

    splits = article_splits(config.num_digits, config.data_seed)
    device = resolve_device(config.device)

    # warm up both engines (first calls pay for lazy set-up), untimed
    warm_up = dataclasses.replace(config, epochs=2, eval_every=2)
    train_plain(name, 0, warm_up, splits)
    for kernel in kernels:
        train_stacked(name, range(2), warm_up, splits, kernel=kernel)

    # the plain loop, one model at a time
    plain_timing, plain = fastest(
        repeats,
        lambda: [
            train_plain(name, seed, config, splits) for seed in range(plain_seeds)
        ],
    )
    plain_row = rates(plain_seeds * config.epochs, plain_timing)

    # the stacked trainer at every stack size, with every kernel
    rows = []
    for size in members:
        for kernel in kernels:
            timing, stacked = fastest(
                repeats,
                lambda size=size, kernel=kernel: train_stacked(
                    name, range(size), config, splits, kernel=kernel
                ),
            )
            rows.append(
                {
                    "members": size,
                    "kernel": kernel,
                    **rates(size * config.epochs, timing),
                    "max_abs_weight_difference": max_difference(plain, stacked),
                }
            )

    # the ratios, side by side, and the distance to the arithmetic bound
    flops = flops_per_model_epoch(name, config)
    throughput = matmul_flops_per_second(device)
    bound_rate = throughput / flops
    for row in [plain_row, *rows]:
        row["speedup"] = round(
            row["model_epochs_per_s"] / plain_row["model_epochs_per_s"], 2
        )
        row["speedup_cpu"] = round(
            row["model_epochs_per_cpu_s"] / plain_row["model_epochs_per_cpu_s"], 2
        )
        row["fraction_of_bound"] = round(row["model_epochs_per_cpu_s"] / bound_rate, 5)
    return {
        "schema_version": SCHEMA_VERSION,
        "model": name,
        "epochs": config.epochs,
        "repeats": repeats,
        "batch_size": config.batch_size,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "flops_per_model_epoch": flops,
        "matmul_gflops": round(throughput / 1e9, 2),
        "bound_model_epochs_per_s": round(bound_rate, 1),
        "plain": {"models": plain_seeds, **plain_row},
        "stacked": rows,
        "max_abs_weight_difference": max(
            (row["max_abs_weight_difference"] for row in rows), default=None
        ),
    }


def rates(model_epochs: int, timing: tuple[float, float]) -> dict:
    """Model-epochs per second of wall time and of the process's CPU time."""
    wall, cpu = timing
    return {
        "model_epochs": model_epochs,
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "model_epochs_per_s": round(model_epochs / wall, 2),
        "model_epochs_per_cpu_s": round(model_epochs / cpu, 2),
    }


def fastest(repeats: int, work):
    """((wall s, CPU s), result) of the fastest of ``repeats`` runs of ``work()``.

    The fastest run is the one least slowed by other programs on the machine.
    The process's CPU time leaves out the time other programs had the CPU,
    so on a shared machine it measures the work better than wall time does.
    """
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = work()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return (wall, cpu), result


def max_difference(plain, stacked) -> float:
    """Largest weight difference between the two engines, same seed and work."""
    by_seed = {run.seed: run for run in stacked}
    differences = [
        (run.state[key] - by_seed[run.seed].state[key]).abs().max().item()
        for run in plain
        if run.seed in by_seed
        for key in run.state
    ]
    return max(differences, default=None)


def flops_per_model_epoch(name: str, config: TrainConfig) -> int:
    """Multiply-adds x 2 of one epoch's matrix products, forward and backward.

    Backward takes two products per forward product (the gradient of the
    weights and of the layer's input), hence the factor 3.
    """
    from carrydemo.data import ARTICLE_SPLIT
    from carrydemo.models import FEATURE_SIZE, NUM_CLASSES
    from carrydemo.train import seeded_model

    model = seeded_model(name, 0, config.num_digits, config.hidden_size)
    num_steps = config.num_digits
    if name == "rnn":
        hidden = model.config.hidden_size
        per_step = FEATURE_SIZE * hidden + hidden * hidden + hidden * NUM_CLASSES
        per_example = per_step * num_steps
    else:
        hidden = model.config.hidden_size
        inputs = FEATURE_SIZE * num_steps
        per_example = inputs * hidden + hidden * NUM_CLASSES * num_steps
    return 2 * 3 * per_example * ARTICLE_SPLIT[0]


def matmul_flops_per_second(device, size: int = 1024) -> float:
    """Best of a few large float32 products: the machine's arithmetic speed."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        started = time.process_time() if device.type == "cpu" else time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        now = time.process_time() if device.type == "cpu" else time.perf_counter()
        best = min(best, now - started)
    return 2 * size**3 / best


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def print_table(report: dict) -> None:
    """The table, pipe-delimited, fixed width."""
    print(
        f"{report['model']} | {report['epochs']} epochs | "
        f"{report['threads']} thread(s) | load {report['load_average'][0]:.1f} | "
        f"bound {report['bound_model_epochs_per_s']:.0f} model-epochs/s "
        f"({report['matmul_gflops']:.1f} GFLOP/s)"
    )
    print(
        f"{'engine':>19} | {'model-epochs/s':>14} | {'x plain':>7} | "
        f"{'per CPU s':>9} | {'x plain (CPU)':>13} | {'of bound':>8}"
    )
    named = [("plain", report["plain"])]
    named += [
        (f"stacked x{row['members']} {row['kernel']}", row) for row in report["stacked"]
    ]
    for name, row in named:
        print(
            f"{name:>19} | {row['model_epochs_per_s']:14.1f} | "
            f"{row['speedup']:7.1f} | {row['model_epochs_per_cpu_s']:9.1f} | "
            f"{row['speedup_cpu']:13.1f} | {row['fraction_of_bound']:8.2%}"
        )
    difference = report["max_abs_weight_difference"]
    if difference is not None:
        print(f"largest weight difference, plain vs any stacked: {difference:.1e}")
