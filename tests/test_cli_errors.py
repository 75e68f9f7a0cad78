"""Bad input to the real command line: one clear line, status 2, nothing written.

Also: two runs on one build folder, and --help."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from carrydemo.results import TEST_MARKER_DIR_ENV, TEST_PAUSE_ENV, load_metrics
from tests.conftest import cli_env, run_cli, wait_for

OUT = "build/results"
NO_CUDA = not torch.cuda.is_available()

# (arguments after `train --out build/results`, text the message must contain)
BAD_TRAIN_OPTIONS = [
    (["--bogus"], "--bogus"),
    (["--epochs"], "--epochs"),
    (["--wait=yes"], "yes"),
    (["--epochs", "abc"], "'abc'"),
    (["--epochs", ""], "''"),
    (["--epochs", "0"], "--epochs 0"),
    (["--epochs", "-5"], "-5"),
    (["--epochs", "1.5"], "'1.5'"),
    (["--epochs", "1e3"], "'1e3'"),
    (["--epochs", "99999999999"], "99999999999"),
    (["--lr", "abc"], "'abc'"),
    (["--lr", ""], "''"),
    (["--lr", "nan"], "--lr nan"),
    (["--lr", "NaN"], "--lr nan"),
    (["--lr", "inf"], "--lr inf"),
    (["--lr", "-inf"], "--lr -inf"),
    (["--lr", "1e400"], "--lr inf"),
    (["--lr", "0"], "--lr 0.0"),
    (["--lr", "-1"], "--lr -1.0"),
    (["--epochs", "-1e-4"], "'-1e-4'"),
    (["--lr", "-1e-4"], "--lr -0.0001"),
    (["--lr", "11"], "--lr 11.0"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--batch-size", "-1"], "--batch-size -1"),
    (["--batch-size", "x"], "'x'"),
    (["--batch-size", "1000001"], "--batch-size 1000001"),
    (
        ["--loss-threshold", "-1"],
        "--loss-threshold -1.0 is out of range; use a number >= 0 and <= 100.0",
    ),
    (["--loss-threshold", "nan"], "--loss-threshold nan"),
    (["--loss-threshold", "inf"], "--loss-threshold inf"),
    (["--loss-threshold", "101"], "--loss-threshold 101.0"),
    (["--loss-threshold", "low"], "'low'"),
    (["--eval-every", "0"], "--eval-every 0"),
    (["--eval-every", "-3"], "--eval-every -3"),
    (["--eval-every", "y"], "'y'"),
    (["--num-digits", "0"], "--num-digits 0"),
    (["--num-digits", "1001"], "--num-digits 1001"),
    (["--num-digits", "two"], "'two'"),
    (["--hidden-size", "0"], "--hidden-size 0"),
    (["--hidden-size", "-1"], "--hidden-size -1"),
    (["--hidden-size", "5000"], "--hidden-size 5000"),
    (["--hidden-size", "h"], "'h'"),
    (["--threads", "0"], "--threads 0"),
    (["--threads", "-2"], "--threads -2"),
    (["--threads", "1025"], "--threads 1025"),
    (["--threads", "t"], "'t'"),
    (["--device", "tpu"], "'tpu'"),
    (["--device", "CPU"], "'CPU'"),
    (["--device", "cuda:0"], "'cuda:0'"),
    (["--device", ""], "''"),
    pytest.param(
        ["--device", "cuda"],
        "'cuda'",
        marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA"),
    ),
    (["--model", "cnn"], "'cnn'"),
    (["--model", ""], "''"),
    (["--model", "MLP"], "'MLP'"),
    (["--model", "mlp,rnn"], "'mlp,rnn'"),
    (["--jobs", "-1"], "jobs=-1"),
    (["--jobs", "65"], "jobs=65"),
    (["--jobs", "many"], "'many'"),
    (["--engine", "fast"], "'fast'"),
    (["--kernel", "fast"], "'fast'"),
    (["--kernel", "C"], "'C'"),
    (["--engine", "plain", "--kernel", "c"], "--kernel c is for the stacked engine"),
    (["--force=1"], "'1'"),
    (["--seeds", ""], "''"),
    (["--seeds", ","], "','"),
    (["--seeds", "1,"], "'1,'"),
    (["--seeds", "1-"], "'1-'"),
    (["--seeds", "-1"], "'-1'"),
    (["--seeds", "9-0"], "'9-0'"),
    (["--seeds", "1,1"], "'1,1'"),
    (["--seeds", "0-3,2"], "'0-3,2'"),
    (["--seeds", "a"], "'a'"),
    (["--seeds", "1.5"], "'1.5'"),
    (["--seeds", "0x10"], "'0x10'"),
    (["--seeds", "\u00b2"], "'\u00b2'"),
    (["--seeds", "0 - 3"], "'0 - 3'"),
    (["--seeds", "0-99999"], "'0-99999'"),
    (["--seeds", "2147483648"], "2147483648"),
    # a path without a name of its own: the working folder, or one above it
    (["--out", ""], "--out: '' names no file or folder"),
    (["--out", "."], "'.'"),
    (["--out", "./"], "'./'"),
    (["--out", "/"], "'/'"),
    (["--out", ".."], "'..'"),
    (["--out", "results/.."], "'results/..'"),
]


def case_id(case) -> str:
    options = case.values[0] if hasattr(case, "values") else case[0]
    return " ".join(repr(option) for option in options)


def listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_one_clear_line(result, expected: str):
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("carrydemo")
    assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"


def assert_refused_in_one_line(zygote, folder, arguments, expected: str):
    """Run the CLI in the test zygote; it must exit 2 with one line, no traceback."""
    pid = zygote.start(arguments, folder, {}, folder / "log")
    status, output = zygote.wait(pid), (folder / "log").read_text()
    (folder / "log").unlink()
    assert status == 2, output
    lines = output.splitlines()
    assert len(lines) == 1 and "Traceback" not in output
    assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"


@pytest.mark.parametrize(
    ("options", "expected"),
    BAD_TRAIN_OPTIONS,
    ids=[case_id(case) for case in BAD_TRAIN_OPTIONS],
)
def test_a_bad_train_option_gets_one_line_and_status_2(tmp_path, options, expected):
    result = run_cli("train", "--out", OUT, *options, cwd=tmp_path)
    assert_one_clear_line(result, expected)
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [([], "command"), (["fit"], "'fit'"), (["--epochs", "3"], "'3'")],
)
def test_a_missing_or_unknown_command_gets_one_line(tmp_path, arguments, expected):
    result = run_cli(*arguments, cwd=tmp_path)
    assert_one_clear_line(result, expected)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("out", ["a-file", "a-file/results", "a-file/deeper/results"])
def test_an_out_folder_that_is_a_file_is_refused(tmp_path, out):
    (tmp_path / "a-file").write_text("not a folder")
    result = run_cli("train", "--out", out, cwd=tmp_path)
    assert_one_clear_line(result, "'a-file'")
    assert listing(tmp_path) == ["a-file"]
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_bad_input_is_reported_before_pytorch_loads(tmp_path):
    # PyTorch takes seconds to import; a typo should not cost that.
    probe = (
        "import sys\n"
        "from carrydemo.cli import main\n"
        "status = main(['train', '--epochs', '0'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert listing(tmp_path) == []


def test_help_lists_every_train_option(tmp_path):
    result = run_cli("train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--model", "--seeds", "--epochs", "--lr", "--device", "--wait"):
        assert option in result.stdout


def test_two_runs_on_one_build_folder_do_not_interleave(zygote, tiny_results, tmp_path):
    # the first run holds the lock, paused just before it publishes
    shutil.copytree(tiny_results, tmp_path / "build" / "results")
    markers = tmp_path / "markers"
    markers.mkdir()
    train = ["train", "--model", "rnn", "--seeds", "0", "--epochs", "1"]
    pause = {TEST_MARKER_DIR_ENV: str(markers), TEST_PAUSE_ENV: "publish"}
    first = zygote.start(train, tmp_path, pause, tmp_path / "first.log")
    assert wait_for(lambda: (markers / "publish").exists())

    # a second run stops at once, naming the lock, and changes nothing
    second = zygote.start(train, tmp_path, {}, tmp_path / "second.log")
    assert zygote.wait(second) == 2
    message = (tmp_path / "second.log").read_text().splitlines()
    assert len(message) == 1 and "another carrydemo command" in message[0]
    assert str(Path("build") / ".carrydemo.lock") in message[0]

    # with --wait it runs once the first has stopped
    waiting = zygote.start([*train, "--wait"], tmp_path, {}, tmp_path / "third.log")
    time.sleep(1.0)
    assert not (tmp_path / "third.log").read_text()  # still waiting
    os.kill(first, signal.SIGTERM)
    assert zygote.wait(first) == 143
    assert zygote.wait(waiting) == 0, (tmp_path / "third.log").read_text()
    assert load_metrics(tmp_path / "build" / "results")["config"]["epochs"] == 1


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--results", "missing"], "missing"),
        (["--results", "damaged"], str(Path("damaged") / "metrics.json")),
        (["--results", "edited"], str(Path("edited") / "metrics.json")),
        (["--out", "a-file"], "'a-file'"),
        (["--out", "a-file/figures"], "'a-file'"),
        (["--bogus"], "--bogus"),
        (["--wait=1"], "'1'"),
        (["--results"], "--results"),
        (["--results", ""], "--results: ''"),
        (["--out", ""], "--out: ''"),
        (["--out", "."], "--out: '.'"),
    ],
)
def test_a_bad_figures_option_gets_one_line_and_status_2(
    zygote, tiny_results, tmp_path, options, expected
):
    # the figures command imports plotly and PyTorch: its runs are forked
    (tmp_path / "a-file").write_text("not a folder")
    shutil.copytree(tiny_results, tmp_path / "results")
    for name in ("damaged", "edited"):
        shutil.copytree(tiny_results, tmp_path / name)
    (tmp_path / "damaged" / "metrics.json").write_text('{"schema_version": 2,')
    edited = tmp_path / "edited" / "metrics.json"
    edited.write_text(
        edited.read_text().replace('"parameters": 745', '"parameters": 7')
    )
    before = listing(tmp_path)

    arguments = ["figures", "--results", "results", "--out", "build/figures"]
    assert_refused_in_one_line(zygote, tmp_path, [*arguments, *options], expected)
    assert listing(tmp_path) == before


def test_help_lists_every_command_without_loading_them(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "train" in result.stdout and "figures" in result.stdout


BAD_BENCH_OPTIONS = [
    (["--threads", "0"], "--threads 0"),
    (["--repeats", "0"], "--repeats 0"),
    (["--plain-seeds", "101"], "--plain-seeds 101"),
    (["--members", "x"], "'x'"),
    (["--members", "0"], "'0'"),
    (["--members", "1,,2"], "'1,,2'"),
    (["--epochs", "0"], "--epochs 0"),
    (["--epochs", "-1e-4"], "'-1e-4'"),
    (["--device", "tpu"], "'tpu'"),
    (["--model", "both"], "'both'"),
    (["--out", "a-file/bench.json"], "'a-file'"),
    (["--out", "a-file/"], "'a-file'"),
    (["--out", ""], "''"),
]


@pytest.mark.parametrize(
    ("options", "expected"),
    BAD_BENCH_OPTIONS,
    ids=[case_id(case) for case in BAD_BENCH_OPTIONS],
)
def test_a_bad_bench_option_gets_one_line_and_status_2(tmp_path, options, expected):
    (tmp_path / "a-file").write_text("not a folder")
    result = run_cli("bench", "--epochs", "1", *options, cwd=tmp_path)
    assert_one_clear_line(result, expected)
    assert listing(tmp_path) == ["a-file"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--results", "missing"], str(Path("missing") / "metrics.json")),
        (["--out", "a-file/models.json"], "'a-file'"),
        (["--out", "a-file/"], "'a-file'"),
        (["--out", ""], "--out: ''"),
        (["--results", ".."], "--results: '..'"),
        (["--bogus"], "--bogus"),
    ],
)
def test_a_bad_webexport_option_gets_one_line_and_status_2(
    zygote, tiny_results, tmp_path, options, expected
):
    (tmp_path / "a-file").write_text("not a folder")
    shutil.copytree(tiny_results, tmp_path / "results")
    before = listing(tmp_path)
    arguments = ["webexport", "--results", "results", "--out", "web/models.json"]
    pid = zygote.start([*arguments, *options], tmp_path, {}, tmp_path / "log")
    status, output = zygote.wait(pid), (tmp_path / "log").read_text()
    (tmp_path / "log").unlink()
    assert status == 2, output
    assert len(output.splitlines()) == 1 and "Traceback" not in output
    assert expected in output
    assert listing(tmp_path) == before


@pytest.mark.parametrize("out", ["into/", "existing"])
def test_bench_out_naming_a_folder_writes_bench_json_in_it(zygote, tmp_path, out):
    (tmp_path / "existing").mkdir()
    bench = ["bench", "--members", "1", "--epochs", "1", "--plain-seeds", "1"]
    options = ["--repeats", "1", "--out", out]
    pid = zygote.start([*bench, *options], tmp_path, {}, tmp_path / "log")
    assert zygote.wait(pid) == 0, (tmp_path / "log").read_text()
    folder = out.rstrip("/")
    assert json.loads((tmp_path / folder / "bench.json").read_text())["model"] == "rnn"
    assert (tmp_path / folder).is_dir()


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        # named for reading: a folder that is not there is not made
        ("missing", "--results 'missing' does not exist"),
        ("a-file/deeper", "--results 'a-file/deeper' does not exist"),
        ("a-file", "--results 'a-file': 'a-file' is a file"),
        ("", "--results: '' names no file or folder"),
        (".", "--results: '.'"),
    ],
)
def test_a_bad_study_results_folder_gets_one_line_and_status_2(
    zygote, tmp_path, results, expected
):
    (tmp_path / "a-file").write_text("not a folder")
    before = listing(tmp_path)
    study = ["study", "--quick", "--results", results]
    assert_refused_in_one_line(zygote, tmp_path, study, expected)
    assert listing(tmp_path) == before


def test_a_c_kernel_that_cannot_be_built_gets_one_line(tmp_path):
    """--kernel c insists; --kernel auto falls back to tensor operations."""
    options = ["--model", "mlp", "--seeds", "0", "--epochs", "1", "--device", "cpu"]
    no_compiler = {"CC": "false", "CARRYDEMO_KERNEL_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "results"
    result = run_cli(
        "train",
        *options,
        "--kernel",
        "c",
        "--out",
        str(out),
        cwd=tmp_path,
        **no_compiler,
    )
    assert_one_clear_line(result, "--kernel c: the C kernel is not available here")
    assert not out.exists()

    result = run_cli("train", *options, "--out", str(out), cwd=tmp_path, **no_compiler)
    assert result.returncode == 0, result.stderr
    assert "C kernel not available (false failed" in result.stderr
    assert json.loads((out / "manifest.json").read_text())["kernel"] == "tensor"
