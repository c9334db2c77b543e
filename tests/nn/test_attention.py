"""relative_shift against its definition written as a loop."""

import pytest
import torch

from echostream.nn.attention import relative_shift


@pytest.mark.parametrize(("chunk", "left", "right"), [(64, 128, 128), (4, 16, 0), (1, 0, 0), (1, 3, 2), (2, 2, 1), (8, 32, 8)])
def test_relative_shift_matches_definition(chunk: int, left: int, right: int) -> None:
    window = left + chunk + right
    positions = 2 * chunk + left + right - 1
    scores = torch.randn(3, 2, chunk, positions)
    # query i attends to key j at relative distance index j + C - 1 - i
    expected = torch.empty(3, 2, chunk, window)
    for i in range(chunk):
        for j in range(window):
            expected[..., i, j] = scores[..., i, j + chunk - 1 - i]
    assert torch.equal(relative_shift(scores, window), expected)
