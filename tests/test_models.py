"""The two models: sizes, shapes, the recurrence, prediction and accuracy."""

from __future__ import annotations

import pytest
import torch

from carrydemo.models import (
    MLP,
    ElmanRNN,
    build_model,
    count_parameters,
    exact_match_accuracy,
    predict,
)


def features(batch: int, num_digits: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(batch * 100 + num_digits)
    return torch.randint(0, 10, (batch, num_digits, 2), generator=generator).float()


def test_parameter_counts_are_the_articles():
    assert count_parameters(build_model("mlp")) == 770 == 6 * 20 + 20 + 20 * 30 + 30
    assert count_parameters(build_model("rnn")) == 745
    assert 745 == 2 * 21 + 21 * 21 + 21 + 21 + 21 * 10 + 10


@pytest.mark.parametrize("num_digits", [3, 7])
def test_rnn_shapes_with_batch_size_unlike_sequence_length(num_digits):
    rnn = build_model("rnn")
    inputs = features(5, num_digits)
    assert rnn(inputs).shape == (5, num_digits, 10)
    assert rnn.hidden_states(inputs).shape == (5, num_digits, 21)
    assert rnn.init_hidden(5).shape == (1, 5, 21)
    assert torch.all(rnn.init_hidden(5) == 0)


def test_rnn_matches_the_hand_written_elman_recurrence():
    torch.manual_seed(0)
    rnn, inputs = build_model("rnn"), features(5, 4)
    cell = rnn.rnn
    hidden = torch.zeros(5, 21)
    expected = []
    for t in range(4):
        hidden = torch.tanh(
            inputs[:, t] @ cell.weight_ih_l0.T
            + cell.bias_ih_l0
            + hidden @ cell.weight_hh_l0.T
            + cell.bias_hh_l0
        )
        expected.append(hidden)
    torch.testing.assert_close(
        rnn.hidden_states(inputs), torch.stack(expected, dim=1), atol=1e-5, rtol=0
    )


def test_outputs_are_log_probabilities_per_digit():
    for name in ("mlp", "rnn"):
        log_probs = build_model(name)(features(5, 3))
        assert log_probs.shape == (5, 3, 10)
        torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(5, 3))


@pytest.mark.parametrize("name", ["mlp", "rnn"])
def test_predict_returns_integer_digits_batch_by_time(name):
    predicted = predict(build_model(name), features(5, 3))
    assert predicted.shape == (5, 3)
    assert predicted.dtype == torch.int64
    assert predicted.min() >= 0 and predicted.max() <= 9


def test_mlp_refuses_other_lengths_with_a_clear_error():
    mlp = build_model("mlp")
    with pytest.raises(ValueError, match="takes 3-digit inputs, got 4"):
        mlp(features(5, 4))


def test_build_model_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown model 'cnn'; choose one of mlp, rnn"):
        build_model("cnn")


def test_models_are_the_expected_classes_and_sizes():
    assert isinstance(build_model("mlp", num_digits=4), MLP)
    assert (
        count_parameters(build_model("mlp", num_digits=4)) == 8 * 20 + 20 + 20 * 40 + 40
    )
    assert isinstance(build_model("rnn", hidden_size=5), ElmanRNN)


@pytest.mark.parametrize(
    ("predicted", "labels", "accuracy"),
    [
        ([[1, 2, 3]], [[1, 2, 3]], 1.0),
        ([[1, 2, 3]], [[1, 2, 4]], 0.0),
        ([[1, 2, 3], [0, 0, 0]], [[1, 2, 3], [0, 0, 1]], 0.5),
        ([[9, 9, 9], [1, 1, 1], [2, 2, 2], [3, 3, 3]], [[9, 9, 9]] * 4, 0.25),
        # every digit but one right in every example still counts as wrong
        ([[1, 2, 3], [4, 5, 6]], [[0, 2, 3], [4, 5, 0]], 0.0),
    ],
)
def test_exact_match_accuracy_on_hand_made_cases(predicted, labels, accuracy):
    result = exact_match_accuracy(torch.tensor(predicted), torch.tensor(labels))
    assert result == pytest.approx(accuracy)


def test_exact_match_accuracy_refuses_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="shapes differ"):
        exact_match_accuracy(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="zero examples"):
        exact_match_accuracy(torch.zeros(0, 3), torch.zeros(0, 3))
