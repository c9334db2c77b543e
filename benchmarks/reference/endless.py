"""Time the reference package's long-form decoding of one file (run in the reference venv).

    PYTHONPATH=benchmarks/reference .venv-reference/bin/python benchmarks/reference/endless.py \
        MODEL_DIR AUDIO [--threads 2] [--chunk 64 --left 128 --right 128]

Prints one JSON line: audio seconds, wall seconds of ``endless_decode`` (model loading excluded),
peak RSS and the RSS after loading (MB), and the text.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import soundfile as sf
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("audio")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--left", type=int, default=128)
    parser.add_argument("--right", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import chunkformer

    model = chunkformer.ChunkFormerModel.from_pretrained(args.model)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    text = model.endless_decode(args.audio, chunk_size=args.chunk, left_context_size=args.left,
                                right_context_size=args.right, return_timestamps=False)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": "reference", "duration": sf.info(args.audio).duration, "wall": wall,
                      "peak_mb": peak, "model_mb": base_rss, "text": text.strip()}))


if __name__ == "__main__":
    main()
