"""Rebuilds are reproducible: equal inputs give byte-identical outputs.

Two training runs of one configuration write equal results; two figure and
site builds from equal results, into different folders, write equal files
(the sitemap excepted, which may carry the build date).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, cli_command, cli_env

NOT_COMPARED = {"sitemap.xml", "sitemap.xml.gz", "manifest.json"}
TRAIN = ["train", "--seeds", "0-1", "--epochs", "3", "--eval-every", "1"]


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in NOT_COMPARED
    }


def run_side_by_side(commands: list[list[str]], envs: list[dict]) -> None:
    """Run the commands at once (each waits on I/O and imports) and check them."""
    processes = [
        subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command, env in zip(commands, envs, strict=True)
    ]
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output


def differences(first: dict, second: dict) -> list[str]:
    names = sorted(set(first) | set(second))
    return [name for name in names if first.get(name) != second.get(name)]


@pytest.mark.parametrize("engine", ["stacked", "plain"])
def test_two_training_runs_write_identical_results(zygote, tmp_path, engine):
    pids = [
        zygote.start(
            [*TRAIN, "--engine", engine, "--jobs", "1", "--out", f"build{n}/results"],
            tmp_path,
            {},
            tmp_path / f"train{n}.log",
        )
        for n in (1, 2)
    ]
    for n, pid in enumerate(pids, start=1):
        assert zygote.wait(pid) == 0, (tmp_path / f"train{n}.log").read_text()
    first = tree_bytes(tmp_path / "build1" / "results")
    second = tree_bytes(tmp_path / "build2" / "results")
    assert len(first) == 6  # metrics, curves, four weights files
    assert differences(first, second) == []


def test_the_manifest_records_what_the_weights_depend_on(
    tiny_results, zygote, tmp_path
):
    pid = zygote.start([*TRAIN, "--jobs", "1"], tmp_path, {}, tmp_path / "log")
    assert zygote.wait(pid) == 0, (tmp_path / "log").read_text()
    manifest = (tmp_path / "build" / "results" / "manifest.json").read_text()
    for key in ('"threads": 1', '"torch":', '"device": "cpu"', '"engine":'):
        assert key in manifest


@pytest.mark.slow
def test_two_builds_write_identical_figures_and_pages(tiny_results, tmp_path):
    # draw the figures twice with the real command, into two folders
    figures = [tmp_path / "build1" / "figures", tmp_path / "build2" / "figures"]
    run_side_by_side(
        [
            cli_command("figures", "--results", str(tiny_results), "--out", str(out))
            for out in figures
        ],
        [cli_env(), cli_env()],
    )
    assert (
        tree_bytes(figures[0])
        and differences(tree_bytes(figures[0]), tree_bytes(figures[1])) == []
    )

    # build the site twice, each from its own figures, into two folders
    sites = [tmp_path / "site1", tmp_path / "site2"]
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d"]
    run_side_by_side(
        [[*build, str(site)] for site in sites],
        [
            cli_env(
                CARRYDEMO_RESULTS=str(tiny_results),
                CARRYDEMO_FIGURES=str(figure_dir),
                NO_MKDOCS_2_WARNING="1",
            )
            for figure_dir in figures
        ],
    )
    first, second = tree_bytes(sites[0]), tree_bytes(sites[1])
    assert "index.html" in first and len(first) > 20
    assert differences(first, second) == []
    # no page names the folder it was built from or into
    for name, payload in first.items():
        assert os.fsencode(tmp_path) not in payload, name
