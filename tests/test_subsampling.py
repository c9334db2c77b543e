"""The 8x depthwise-striding subsampling: a new layer passes its input through."""

from __future__ import annotations

import torch

from echostream.nn.subsampling import DepthwiseStridingSubsampling


def test_a_new_layer_output_depends_on_its_input() -> None:
    # With PyTorch's default initialisation the five stages shrank the signal while the biases
    # added constants: two different utterances gave outputs only 14% apart, and training from
    # scratch learned the token prior long before the acoustics.
    torch.manual_seed(0)
    layer = DepthwiseStridingSubsampling(80, 144)
    a, b = torch.randn(2, 1, 200, 80).unbind(0)  # two unrelated normalised feature windows
    with torch.no_grad():
        ya, yb = layer(a), layer(b)  # (1, 24, 144) each
    assert ya.shape == (1, 24, 144)
    assert float((ya - yb).norm() / ya.norm()) > 0.5
    biases = [m.bias for m in layer.modules() if getattr(m, "bias", None) is not None]
    assert biases and all(not bool(b.detach().any()) for b in biases)
