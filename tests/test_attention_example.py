"""examples/transformer_reverse.py on a small budget: a 2-block Transformer
(pre-norm and post-norm) learns to reverse digit sequences to >= 99% token
accuracy on held-out data — the end-to-end proof that the attention
gradients are right. One thread: the result does not depend on it, and the
shared test machine runs faster so."""
import os
import sys

import pytest

import fastgrad as fg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import transformer_reverse as ex  # noqa: E402


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_transformer_learns_to_reverse(norm):
    fg.set_num_threads(1)
    model, acc, _ = ex.train(task="reverse", norm=norm, length=6, n_train=3000, epochs=5,
                             verbose=0)
    assert acc >= 0.99, acc
    names = [l.name for l in model.layers]
    assert "mha0" in names and "mha1" in names and "pos" in names
