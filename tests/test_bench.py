"""The benchmark: both engines on the same work, and the table it writes."""

from __future__ import annotations

import json

import pytest

from carrydemo.cli import main
from carrydemo.kernels import compiler


def test_bench_writes_the_table_and_the_engines_agree(tmp_path, capsys):
    out = tmp_path / "bench.json"
    options = ["--members", "2,3", "--epochs", "2", "--plain-seeds", "2"]
    assert main(["bench", *options, "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    sizes = [(row["members"], row["kernel"]) for row in report["stacked"]]
    kernels = ["c", "tensor"] if compiler() else ["tensor"]
    assert sizes == [(size, kernel) for size in (2, 3) for kernel in kernels]
    assert report["plain"]["model_epochs"] == 2 * 2
    assert report["stacked"][-1]["model_epochs"] == 3 * 2
    for row in [report["plain"], *report["stacked"]]:
        assert row["model_epochs_per_s"] > 0 and row["fraction_of_bound"] > 0
    assert report["plain"]["speedup"] == 1.0
    assert report["max_abs_weight_difference"] < 1e-6
    # per step Linear(2, 21), Linear(21, 21), Linear(21, 10); x 3 for backward
    assert report["flops_per_model_epoch"] == 2 * 3 * (42 + 441 + 210) * 3 * 500
    assert "stacked x3 tensor" in capsys.readouterr().out


@pytest.mark.parametrize("kernels", ["", "C", "c,c", "cuda"])
def test_bad_kernel_lists_get_one_line_and_status_2(tmp_path, capsys, kernels):
    out = tmp_path / "bench.json"
    assert main(["bench", "--kernels", kernels, "--out", str(out)]) == 2
    assert "is not auto or a list like c,tensor" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("members", ["", "0", "ten", "5,-1"])
def test_bad_stack_sizes_get_one_line_and_status_2(tmp_path, capsys, members):
    out = tmp_path / "bench.json"
    assert main(["bench", "--members", members, "--out", str(out)]) == 2
    assert "is not a list of stack sizes" in capsys.readouterr().err
    assert not out.exists()
