"""Shared neural-network blocks: attention, convolution, feed-forward, positions, norms, subsampling."""
