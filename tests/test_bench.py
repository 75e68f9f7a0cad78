"""The benchmark: both engines on the same work, and the table it writes."""

from __future__ import annotations

import json

import pytest

from carrydemo.cli import main


def test_bench_writes_the_table_and_the_engines_agree(tmp_path, capsys):
    out = tmp_path / "bench.json"
    options = ["--members", "2,3", "--epochs", "2", "--plain-seeds", "2"]
    assert main(["bench", *options, "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [row["members"] for row in report["stacked"]] == [2, 3]
    assert report["plain"]["model_epochs"] == 2 * 2
    assert report["stacked"][1]["model_epochs"] == 3 * 2
    for row in [report["plain"], *report["stacked"]]:
        assert row["model_epochs_per_s"] > 0 and row["fraction_of_bound"] > 0
    assert report["plain"]["speedup"] == 1.0
    assert report["max_abs_weight_difference"] < 1e-6
    # per step Linear(2, 21), Linear(21, 21), Linear(21, 10); x 3 for backward
    assert report["flops_per_model_epoch"] == 2 * 3 * (42 + 441 + 210) * 3 * 500
    assert "stacked x3" in capsys.readouterr().out


@pytest.mark.parametrize("members", ["", "0", "ten", "5,-1"])
def test_bad_stack_sizes_get_one_line_and_status_2(tmp_path, capsys, members):
    out = tmp_path / "bench.json"
    assert main(["bench", "--members", members, "--out", str(out)]) == 2
    assert "is not a list of stack sizes" in capsys.readouterr().err
    assert not out.exists()
