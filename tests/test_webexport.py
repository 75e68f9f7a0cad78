"""Tests of the models' JSON export for the Try it page."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from carrydemo import cli
from carrydemo.results import ResultsError, load_trained_model
from carrydemo.webexport import FORMAT_VERSION, MAX_RNN_DIGITS, models_json


def test_export_is_deterministic_bytes(results):
    assert models_json(results) == models_json(results)


def test_export_holds_every_weight_exactly_as_float32(results):
    data = json.loads(models_json(results))
    assert data["format_version"] == FORMAT_VERSION
    assert data["max_rnn_digits"] == MAX_RNN_DIGITS
    for name in ("mlp", "rnn"):
        state = load_trained_model(results, name).state_dict()
        tensors = data["models"][name]["tensors"]
        assert sorted(tensors) == sorted(state)
        for key, tensor in state.items():
            exported = tensors[key]
            assert exported["shape"] == list(tensor.shape)
            # the shortest decimal must read back as the very same float32
            values = np.array(exported["data"], dtype=np.float32)
            assert np.array_equal(values, tensor.numpy().ravel()), key


def test_export_states_sizes_from_the_results(results):
    data = json.loads(models_json(results))
    assert data["num_digits"] == 3
    assert data["models"]["rnn"]["hidden_size"] == 21
    assert data["models"]["mlp"]["hidden_size"] == 20
    assert data["models"]["rnn"]["parameters"] == 745


def test_cli_writes_the_file(results, tmp_path):
    out = tmp_path / "models.json"
    assert cli.main(["webexport", "--results", str(results), "--out", str(out)]) == 0
    assert out.read_bytes() == models_json(results)


def test_missing_results_name_the_train_command(tmp_path, capsys):
    with pytest.raises(ResultsError, match="nox -s train"):
        models_json(tmp_path / "nothing")
    code = cli.main(["webexport", "--results", str(tmp_path / "nothing")])
    assert code == 2
    assert "nox -s train" in capsys.readouterr().err


def test_json_weights_reproduce_pytorch_in_numpy(results):
    """The export's own forward pass (as the page does it) matches PyTorch."""
    data = json.loads(models_json(results))
    weights = {
        key: np.array(t["data"], dtype=np.float64).reshape(t["shape"])
        for key, t in data["models"]["rnn"]["tensors"].items()
    }
    features = torch.tensor([[[8, 0], [3, 4], [4, 5]]], dtype=torch.float32)
    hidden = np.zeros(21)
    steps = []
    for x in features[0].numpy().astype(np.float64):
        hidden = np.tanh(
            weights["rnn.weight_ih_l0"] @ x
            + weights["rnn.bias_ih_l0"]
            + weights["rnn.weight_hh_l0"] @ hidden
            + weights["rnn.bias_hh_l0"]
        )
        steps.append(hidden)
    expected = load_trained_model(results, "rnn").hidden_states(features)[0]
    assert np.allclose(np.array(steps), expected.detach().numpy(), atol=1e-6)
