#!/usr/bin/env bash
# Train every encoder preset on the same synth_en data, tokenizer and step budget, average each
# run's best checkpoints and evaluate them at matched latencies (encoder comparison, issue 10).
#
#   recipes/synth_en/compare_encoders.sh [STEPS]     (default 800; run.sh stages 0-1 first)
#   PRESETS="zipformer_small" recipes/synth_en/compare_encoders.sh    (some of the presets only)
#
# Each run resumes where it stopped (rerun the script). Results: exp/compare/<preset>/eval/*.txt.
# BENCH=1 then times every preset's average.pt at its two streaming settings with
# benchmarks/streaming_latency.py (nothing else may run meanwhile), BASELINE="NAME=MODEL:C/L/R,C/L/R"
# adding a model trained elsewhere, e.g. BASELINE="chunkformer=small_en:4/16/0,16/32/0" (the bundled
# model: configs/synth_en_small.yaml trained by run.sh for 4200 steps on this data).
# Environment: PYTHON, THREADS as in run.sh; AVERAGE (default 1: the best checkpoint alone; on a
# short budget, checkpoints 200 steps apart differ too much to average: at 1000 steps the average
# of the best 3 ChunkFormer checkpoints made 55.9% WER where the best alone made 39.4%).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
steps=${1:-800}
threads=${THREADS:-0}
average=${AVERAGE:-1}
PYTHON=${PYTHON:-$repo/.venv/bin/python}
echostream() { "$PYTHON" -m echostream.cli.main "$@"; }
out=$here/exp/compare
mkdir -p "$out"

# preset name : latency settings (chunk left right, encoder frames) at about 320 ms and 1.3 s
declare -A settings=(
  [synth_en_small]="4 16 0;16 32 0;64 128 128"
  [emformer_small]="4 32 4;16 64 16;64 128 128"
  [emformer_conv_small]="4 32 4;16 64 16;64 128 128"
  [zipformer_small]="8 32 0;32 64 0;64 128 0"
)
for preset in ${PRESETS:-synth_en_small emformer_small zipformer_small}; do
  run=$out/$preset
  config=$out/$preset.yaml
  # the preset with its relative paths made absolute and the step budget of this comparison
  "$PYTHON" - "$repo/configs/$preset.yaml" "$config" "$steps" <<'PY'
import os
import sys
from pathlib import Path

import yaml

src, dst, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
cfg = yaml.safe_load(src.read_text())
# absolute without following symlinks: manifests' relative audio paths (../shared/data/fsdd) are
# relative to the folder as the recipe names it, which data/ may link elsewhere
resolve = lambda p: os.path.normpath(src.parent.absolute() / p)
cfg["tokenizer"] = resolve(cfg["tokenizer"])
cfg["data"]["train"] = [resolve(p) for p in cfg["data"]["train"]]
cfg["data"]["valid"] = [resolve(p) for p in cfg["data"]["valid"]]
cfg["max_steps"] = steps
dst.write_text(yaml.safe_dump(cfg, sort_keys=False))
PY
  echo "== $preset: train $steps steps"
  echostream train --config "$config" --out "$run" --resume --threads "$threads"
  if [ ! -s "$run/average.pt" ]; then
    echostream average --exp "$run" --best "$average" --out "$run/average.pt"
  fi
  mkdir -p "$run/eval"
  IFS=';' read -r -a contexts <<<"${settings[$preset]}"
  for ctx in "${contexts[@]}"; do
    read -r c l r <<<"$ctx"
    name=heldout_c${c}_l${l}_r${r}
    [ -s "$run/eval/$name.txt" ] && continue
    echostream eval --manifest "$here/data/heldout/manifest.jsonl" --model "$run/average.pt" --chunk-size "$c" \
      --left-context "$l" --right-context "$r" --out "$run/eval/$name.jsonl" --threads "$threads" \
      | tee "$run/eval/$name.txt"
  done
done

if [ "${BENCH:-0}" = 1 ]; then
  models=()
  for preset in ${PRESETS:-synth_en_small emformer_small zipformer_small}; do
    IFS=';' read -r -a contexts <<<"${settings[$preset]}"
    streaming=$(printf '%s,%s' "${contexts[0]// //}" "${contexts[1]// //}")
    models+=(--model "$preset=$out/$preset/average.pt:$streaming")
  done
  [ -n "${BASELINE:-}" ] && models+=(--model "$BASELINE")
  results=$repo/benchmarks/results
  echo "== streaming latency, $steps steps"
  "$PYTHON" "$repo/benchmarks/streaming_latency.py" --threads "${THREADS:-2}" "${models[@]}" \
    --plot "$results/latency_encoders_$steps.png" | tee "$results/streaming_latency_encoders_$steps.txt"
fi
