"""Shared fixtures: a tiny trained results folder and a way to run the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from carrydemo.config import TrainConfig
from carrydemo.data import article_splits
from carrydemo.models import count_parameters
from carrydemo.results import write_results
from carrydemo.train import seeded_model, train_plain

REPO_ROOT = Path(__file__).resolve().parent.parent
# A run that exercises the whole path in about a second.
TINY = TrainConfig(seeds=(0, 1), epochs=3, eval_every=1, device="cpu")

torch.set_num_threads(1)


def cli_env(**extra: str) -> dict:
    """The environment for ``python -m carrydemo``, importing this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "carrydemo", *args]


def run_cli(*args: str, cwd: Path, timeout: float = 120, **env: str):
    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_tiny_results(out_dir: Path, config: TrainConfig = TINY) -> None:
    splits = article_splits(config.num_digits, config.data_seed)
    runs = {
        name: [train_plain(name, seed, config, splits) for seed in config.seeds]
        for name in config.models
    }
    parameters = {name: count_parameters(seeded_model(name, 0)) for name in runs}
    manifest = {"threads": 1, "device": "cpu", "torch": torch.__version__}
    write_results(out_dir, config, runs, parameters, manifest)


def wait_for(condition, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


class Zygote:
    """The client of tests/cli_zygote.py."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.cli_zygote"],
            cwd=REPO_ROOT,
            env=cli_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def start(self, argv: list[str], cwd: Path, env: dict, log: Path) -> int:
        command = {"start": argv, "cwd": str(cwd), "env": env, "log": str(log)}
        return self.ask(command)["pid"]

    def wait(self, pid: int) -> int:
        return self.ask({"wait": pid})["status"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()


@pytest.fixture(scope="session")
def zygote():
    client = Zygote()
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory) -> Path:
    """A complete results folder from TINY; copy it before changing it."""
    out_dir = tmp_path_factory.mktemp("tiny") / "results"
    write_tiny_results(out_dir)
    return out_dir


# A short real run through the command line, shared by the figures, site and
# web-export tests: both models, two seeds, twenty epochs.
TINY_TRAIN = ["--seeds", "0-1", "--epochs", "20", "--eval-every", "5"]


@pytest.fixture(scope="session")
def results(tmp_path_factory) -> Path:
    from carrydemo import cli

    out = tmp_path_factory.mktemp("results") / "results"
    assert cli.main(["train", *TINY_TRAIN, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def figures(results, tmp_path_factory) -> Path:
    from carrydemo.figures import write_figures

    out = tmp_path_factory.mktemp("figures") / "figures"
    write_figures(results, out)
    return out
