"""Runs stopped at any moment leave the previous results readable and unchanged.

Every case starts a real ``python -m carrydemo train`` on a folder that holds
complete earlier results, waits until it reaches a known point (the test hooks
CARRYDEMO_TEST_MARKER_DIR and CARRYDEMO_TEST_PAUSE_AT), and stops it there
with a real signal. The runs are forked from tests/cli_zygote.py, which has
PyTorch imported already: thirteen imports would cost half a minute of CPU.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from carrydemo.results import TEST_MARKER_DIR_ENV, TEST_PAUSE_ENV, load_metrics
from tests.conftest import Zygote, wait_for

# training: mid-epoch; staging: weights written, metrics not yet;
# publish: staging complete, not yet swapped in; swapped: new results in
# place, the old folder not yet deleted.
KILL_POINTS = [
    ("training", signal.SIGINT),
    ("training", signal.SIGTERM),
    ("training", signal.SIGKILL),
    ("staging", signal.SIGINT),
    ("staging", signal.SIGTERM),
    ("staging", signal.SIGKILL),
    ("publish", signal.SIGINT),
    ("publish", signal.SIGTERM),
    ("publish", signal.SIGKILL),
    ("swapped", signal.SIGKILL),
]
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}
MESSAGE = {
    signal.SIGINT: "carrydemo: interrupted; earlier results are unchanged",
    signal.SIGTERM: "carrydemo: terminated; earlier results are unchanged",
}
TRAIN = ["train", "--model", "rnn", "--seeds", "0", "--out", "build/results"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every results file; hidden entries (a run's checkpoints) are not results."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.relative_to(folder).parts[0].startswith(".")
    }


def debris(build: Path) -> list[str]:
    return sorted(p.name for p in build.iterdir() if p.name.startswith(".results"))


@dataclass
class Case:
    stage: str
    signum: signal.Signals
    root: Path
    pid: int = 0
    problems: list = field(default_factory=list)

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    def start(self, zygote: Zygote, previous: Path) -> None:
        shutil.copytree(previous, self.build / "results")
        (self.root / "markers").mkdir()
        env = {TEST_MARKER_DIR_ENV: str(self.root / "markers")}
        if self.stage != "training":
            env[TEST_PAUSE_ENV] = self.stage
        # training runs far longer than the test, so it is stopped mid-epoch
        epochs = "100000" if self.stage == "training" else "1"
        self.pid = zygote.start([*TRAIN, "--epochs", epochs], self.root, env, self.log)

    def reached(self) -> bool:
        return (self.root / "markers" / self.stage).exists()


def stop_at_its_point(zygote: Zygote, case: Case) -> None:
    if not wait_for(case.reached):
        case.problems.append(f"never reached its stage: {case.log.read_text()}")
    if case.stage == "training":
        time.sleep(0.5)  # well inside the first epochs
    os.kill(case.pid, case.signum)
    status, output = zygote.wait(case.pid), case.log.read_text()
    if status != EXIT_STATUS[case.signum]:
        case.problems.append(f"exit {status}: {output}")
    if case.signum in MESSAGE and output.splitlines()[-1:] != [MESSAGE[case.signum]]:
        case.problems.append(f"last line of output: {output!r}")


def check_results_survived(case: Case, before: dict, metrics: dict) -> None:
    results = case.build / "results"
    if case.stage == "swapped":  # the new results were already complete
        if load_metrics(results)["config"]["models"] != ["rnn"]:
            case.problems.append("the swapped-in results are not the new run's")
        return
    if snapshot(results) != before:
        case.problems.append("results changed")
    if load_metrics(results) != metrics:
        case.problems.append("load_metrics differs")
    if case.signum != signal.SIGKILL and debris(case.build):
        case.problems.append(f"left {debris(case.build)}")


@pytest.fixture(scope="module")
def stopped_runs(zygote, tiny_results, tmp_path_factory) -> list[Case]:
    cases = [
        Case(stage, signum, tmp_path_factory.mktemp(f"{stage}-{signum.name}"))
        for stage, signum in KILL_POINTS
    ]
    for case in cases:
        case.start(zygote, tiny_results)
    for case in cases:
        stop_at_its_point(zygote, case)
    return cases


@pytest.mark.slow
def test_every_stopped_run_leaves_complete_results(stopped_runs, tiny_results):
    before, metrics = snapshot(tiny_results), load_metrics(tiny_results)
    for case in stopped_runs:
        check_results_survived(case, before, metrics)
    problems = {
        f"{case.stage} {case.signum.name}": case.problems
        for case in stopped_runs
        if case.problems
    }
    assert problems == {}
    assert len(stopped_runs) == 10


@pytest.mark.slow
def test_the_next_run_removes_debris_and_succeeds(zygote, stopped_runs):
    killed = [c for c in stopped_runs if c.signum == signal.SIGKILL]
    assert [debris(c.build) != [] for c in killed] == [False, True, True, True]
    for case in killed:
        case.pid = zygote.start([*TRAIN, "--epochs", "1"], case.root, {}, case.log)
    for case in killed:
        assert zygote.wait(case.pid) == 0, case.log.read_text()
        assert debris(case.build) == []
        assert load_metrics(case.build / "results")["config"]["epochs"] == 1


def worker_pids(parent: int) -> list[int]:
    """The multiprocessing workers whose parent is ``parent``."""
    workers = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            command = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if f"\nPPid:\t{parent}\n" in text and b"spawn_main" in command:
            workers.append(int(status.parent.name))
    return workers


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_killed_run_takes_its_worker_processes_with_it(zygote, tmp_path):
    # a run with one worker process per model, killed once both have started
    markers = tmp_path / "markers"
    markers.mkdir()
    train = ["train", "--jobs", "2", "--epochs", "100000"]
    env = {TEST_MARKER_DIR_ENV: str(markers)}
    pid = zygote.start(train, tmp_path, env, tmp_path / "log")
    started = [markers / "training-mlp", markers / "training-rnn"]
    assert wait_for(lambda: all(marker.exists() for marker in started))
    workers = worker_pids(pid)
    assert len(workers) == 2
    os.kill(pid, signal.SIGKILL)
    assert zygote.wait(pid) == -9

    # no orphan trains on, to write checkpoints beside the next run
    try:
        assert wait_for(lambda: not any(map(running, workers)), timeout=30)
    finally:
        for worker in filter(running, workers):
            os.kill(worker, signal.SIGKILL)
