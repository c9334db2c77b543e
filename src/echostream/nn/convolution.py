"""The Conformer convolution module, applied per chunk over a window with limited right reach.

Shape legend: N chunks, C chunk size, D channels; the window has ``before`` frames ahead of the
chunk and ``after`` frames past it: K = kernel // 2 each for the centred kernel (ChunkFormer),
kernel - 1 and 0 for the causal one (ConvEmformer).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from echostream.nn.feedforward import make_activation


class ChunkConvolution(nn.Module):
    """Pointwise conv + GLU, depthwise conv over the chunk window, norm, activation, pointwise.

    The module is split in two so that the encoder can assemble each chunk's window (cached
    frames of the previous chunk, this chunk, the start of the next) from GLU outputs:
    :meth:`gate` runs per frame, :meth:`forward` runs on the assembled windows.
    """

    def __init__(self, channels: int, kernel_size: int, norm: str, activation: str, causal: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"cnn_module_kernel must be odd, got {kernel_size}")
        self.reach = kernel_size // 2
        self.before = kernel_size - 1 if causal else self.reach  # window frames ahead of the chunk
        self.after = 0 if causal else self.reach  # window frames past it
        self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, groups=channels)
        self.norm: nn.Module
        if norm == "layer_norm":
            self.norm = nn.LayerNorm(channels)
        elif norm == "batch_norm":
            self.norm = nn.BatchNorm1d(channels)
        else:
            raise ValueError(f"unknown cnn_module_norm {norm!r}; expected layer_norm or batch_norm")
        self.activation = make_activation(activation)
        self.pointwise_conv2 = nn.Conv1d(channels, channels, 1)

    def gate(self, x: Tensor) -> Tensor:
        """x: (*, T, D) normalised input -> (*, T, D) GLU output of the first pointwise conv."""
        h = F.linear(x, self.pointwise_conv1.weight.squeeze(-1), self.pointwise_conv1.bias)
        return F.glu(h, dim=-1)  # (*, T, D)

    def forward(self, windows: Tensor, conv_mask: Tensor) -> Tensor:
        """Convolve each chunk over its window.

        Args:
            windows: (N, before + C + after, D) GLU outputs around each chunk.
            conv_mask: (N, before + C + after) True where a window frame may be used.
        Returns:
            out: (N, C, D), zero on frames outside the utterance.
        """
        h = windows.masked_fill(~conv_mask.unsqueeze(-1), 0.0).transpose(1, 2)  # (N, D, before + C + after)
        h = self.depthwise_conv(h)  # (N, D, C)
        if isinstance(self.norm, nn.LayerNorm):
            h = self.norm(h.transpose(1, 2))  # (N, C, D)
        else:
            h = self.norm(h).transpose(1, 2)  # (N, C, D)
        h = F.linear(self.activation(h), self.pointwise_conv2.weight.squeeze(-1), self.pointwise_conv2.bias)
        own = conv_mask[:, self.before : conv_mask.shape[1] - self.after]  # (N, C)
        return h.masked_fill(~own.unsqueeze(-1), 0.0)  # (N, C, D)
