#!/usr/bin/env bash
# Train echostream's default English model on the synth_en corpus, average its best checkpoints,
# evaluate it, export it as the bundled model and fill RESULTS.md.
#
#   recipes/synth_en/run.sh [--stage N] [--stop-stage N]
#
# Stages (each one skips or resumes what an earlier run finished, so the script can be rerun):
#   0  data        prepare.sh, unless data/ already holds every manifest
#   1  tokenizer   BPE, 512 ids, on the training transcripts (train + fsdd/train)
#   2  train       configs/synth_en_small.yaml into exp/small (--resume: continues a cut-off run)
#   3  average     the AVERAGE best checkpoints by validation WER -> exp/small/average.pt
#   4  evaluate    heldout, heldout_new_voices, eval_festival per voice family, and fsdd/test,
#                  each at chunk/left/right 64/128/128 and 8/32/8 -> exp/small/eval/
#   5  export      src/echostream/assets/small_en/model.pt (+ README.md) and RESULTS.md
#
# Environment: PYTHON (as in prepare.sh), NPROC (training processes under torchrun, default 1),
# THREADS (torch threads per process, default: torch's choice), AVERAGE (default 5),
# CONFIG (default configs/synth_en_small.yaml; its paths point into this recipe), EXP (default
# exp/; a CONFIG of your own names its tokenizer EXP/tokenizer), EXPORT (default
# src/echostream/assets/small_en).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
data=$here/data
exp=${EXP:-$here/exp}
run=$exp/small
config=${CONFIG:-$repo/configs/synth_en_small.yaml}
nproc=${NPROC:-1}
threads=${THREADS:-0}
average=${AVERAGE:-5}
stage=0
stop_stage=5
source "$repo/recipes/common.sh"


manifests=(train/manifest.jsonl heldout/manifest.jsonl heldout_new_voices/manifest.jsonl fsdd/train.jsonl fsdd/test.jsonl)

if stage_on 0; then
  echo "== stage 0: data"
  missing=0
  for m in "${manifests[@]}"; do [ -s "$data/$m" ] || missing=1; done
  if [ $missing = 1 ]; then
    bash "$here/prepare.sh" "$data"
  else
    echo "data/ holds every manifest; skipping prepare.sh (delete data/ to redo it)"
  fi
fi

if stage_on 1; then
  echo "== stage 1: tokenizer"
  if [ -s "$exp/tokenizer/tokenizer.yaml" ]; then
    echo "exp/tokenizer exists; skipping"
  else
    echostream tokenizer train --manifest "$data/train/manifest.jsonl" --manifest "$data/fsdd/train.jsonl" \
      --kind bpe --vocab-size 512 --out "$exp/tokenizer"
  fi
fi

if stage_on 2; then
  echo "== stage 2: train ($nproc process(es))"
  if [ "$nproc" -gt 1 ]; then
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$nproc" \
      -m echostream.cli.main train --config "$config" --out "$run" --resume --threads "$threads"
  else
    echostream train --config "$config" --out "$run" --resume --threads "$threads"
  fi
fi

if stage_on 3; then
  echo "== stage 3: average"
  available=$(find "$run/checkpoints" -name 'step-*[0-9].pt' | wc -l)
  count=$(( available < average ? available : average ))
  echostream average --exp "$run" --best "$count" --out "$run/average.pt"
fi

if stage_on 4; then
  echo "== stage 4: evaluate"
  mkdir -p "$run/eval"
  for set in heldout heldout_new_voices eval_festival fsdd_test; do
    case $set in
      fsdd_test) manifest=$data/fsdd/test.jsonl ;;
      *) manifest=$data/$set/manifest.jsonl ;;
    esac
    if [ ! -s "$manifest" ]; then echo "run.sh: warning: $manifest not found; $set skipped" >&2; continue; fi
    for ctx in "64 128 128" "8 32 8"; do
      read -r c l r <<<"$ctx"
      name=${set}_c${c}_l${l}_r${r}
      echo "-- $name"
      echostream eval --manifest "$manifest" --model "$run/average.pt" --chunk-size "$c" --left-context "$l" \
        --right-context "$r" --group-by speaker --worst 5 --out "$run/eval/$name.jsonl" --threads "$threads" \
        | tee "$run/eval/$name.txt"
    done
  done
fi

if stage_on 5; then
  echo "== stage 5: export and RESULTS.md"
  assets=${EXPORT:-$repo/src/echostream/assets/small_en}
  mkdir -p "$assets"
  cp "$run/average.pt" "$assets/model.pt"
  "$PYTHON" "$here/fill_results.py" --run "$run" --results "$here/RESULTS.md" --model-card "$assets/README.md" \
    --config "$config"
  echo "exported $assets/model.pt; results in $here/RESULTS.md"
fi
