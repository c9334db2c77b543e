#!/usr/bin/env bash
# The general English default model (issue 12): broad text, many voices, long-form, silence and
# noise, a telephone-band share; trained, averaged and evaluated on held-out text, voices,
# engines and speakers.
#
#   recipes/general_en/run.sh [--stage N] [--stop-stage N]
#
# Stages (each skips what an earlier run finished; rerun to continue):
#   0  text        text.py: normalised sentences of chitchat, WordNet, the WEB Bible and our own,
#                  split by sentence; coverage.txt (held-out OOV rate)
#   1  render      SENTENCES training sentences by TRAIN_VOICES (valid: held-out sentences by
#                  the training voices); held-out test text by training voices, by NEW_VOICES
#                  (new voices of the training engines) and by festival (an engine never trained
#                  on); FSDD with SPEAKER held out; LibriVox (pocketsphinx-testdata)
#   2  conditions  JOINS files of 2-4 training sentences joined by pauses, SPEECHLESS clips of
#                  silence, noise and tones (empty transcripts), a LINE_SHARE of the training
#                  sentences through telephone lines; tests: a 10-minute file of held-out
#                  sentences joined by pauses, clips without speech
#   3  coverage    OOV rate of the held-out text against the tokenizer's training text
#   4  tokenizer   BPE of VOCAB pieces on the training transcripts
#   5  train       configs/general_en.yaml -> exp/general (--resume continues a cut-off run)
#   6  average     the AVERAGE best checkpoints -> exp/general/average.pt
#   7  evaluate    every test set at 64/128/128 and 8/32/8 (greedy CTC) and at 64/128/128 with
#                  attention rescoring -> exp/general/eval
#   8  export      RESULTS.md (results.py); the averaged model and its card -> EXPORT (default
#                  src/echostream/assets/general_en; "default" names it once BUNDLED_MODELS says so)
#
# Environment: PYTHON, THREADS, SENTENCES (default 30000), TEST_SENTENCES (600), JOINS (1500), SPEECHLESS (2000),
# LINE_SHARE (0.15), VOCAB (1000), SPEAKER (FSDD speaker held out, default lucas), AVERAGE (5),
# WORKERS (rendering processes, default: the cores), EXPORT (where stage 8 writes the model).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
data=$here/data
exp=$here/exp
threads=${THREADS:-0}
sentences=${SENTENCES:-30000}
tests=${TEST_SENTENCES:-600}
joins=${JOINS:-1500}
speechless=${SPEECHLESS:-2000}
line_share=${LINE_SHARE:-0.15}
vocab=${VOCAB:-1000}
speaker=${SPEAKER:-lucas}
average=${AVERAGE:-5}
workers=${WORKERS:-$(nproc)}
stage=0
stop_stage=8
source "$repo/recipes/common.sh"
done_or() { [ -s "$1" ]; }   # a stage's output exists: skip it

# Voices (TRAIN_VOICES, NEW_VOICES, EVAL_VOICES), shared with recipes/callbot.
source "$here/voices.sh"

if stage_on 0; then
  echo "== stage 0: text"
  done_or "$data/text/train.txt" || "$PYTHON" "$here/text.py" --out "$data/text"
fi

if stage_on 1; then
  echo "== stage 1: render"
  text=$data/text
  done_or "$text/render_train.txt" \
    || "$PYTHON" "$here/manifests.py" choose --text "$text/train.txt" --count "$sentences" --seed 1 > "$text/render_train.txt"
  done_or "$text/render_valid.txt" || awk -F'\t' -v n="$tests" 'NR % 4 == 0 && ++k <= n {print $2}' "$text/heldout.txt" > "$text/render_valid.txt"
  done_or "$text/render_test.txt" || awk -F'\t' -v n="$tests" 'NR % 4 == 1 && ++k <= n {print $2}' "$text/heldout.txt" > "$text/render_test.txt"
  synth() {  # synth OUT SENTENCES VOICES SEED PREFIX
    done_or "$1/manifest.jsonl" || echostream synth --sentences "$2" --out "$1" --voices "$3" --seed "$4" \
      --id-prefix "$5" --workers "$workers"
  }
  synth "$data/train" "$text/render_train.txt" "$TRAIN_VOICES" 1 train
  synth "$data/valid" "$text/render_valid.txt" "$TRAIN_VOICES" 2 valid
  synth "$data/test_voices" "$text/render_test.txt" "$TRAIN_VOICES" 3 test
  synth "$data/test_new_voices" "$text/render_test.txt" "$NEW_VOICES" 4 test-new
  synth "$data/test_festival" "$text/render_test.txt" "$EVAL_VOICES" 5 test-festival || true
  done_or "$data/fsdd/train.jsonl" || "$PYTHON" "$repo/recipes/synth_en/fsdd_manifest.py" \
    --fsdd "$repo/../shared/data/fsdd" --out "$data/fsdd" --heldout-speaker "$speaker"
  done_or "$data/librivox.jsonl" || "$PYTHON" "$here/manifests.py" librivox --out "$data/librivox.jsonl" || true
fi

if stage_on 2; then
  echo "== stage 2: conditions"
  done_or "$data/train_joined/manifest.jsonl" || echostream manifest join "$data/train/manifest.jsonl" \
    --out "$data/train_joined" --count "$joins" --sentences 2:4 --pause 0.3:1.5 --seed 11 --id-prefix train-joined
  done_or "$data/train_speechless/manifest.jsonl" || echostream manifest speechless --out "$data/train_speechless" \
    --count "$speechless" --seed 12 --id-prefix train-speechless
  if ! done_or "$data/train_line/manifest.jsonl"; then
    "$PYTHON" - "$data/train/manifest.jsonl" "$line_share" "$data/train_line_source.jsonl" <<'PY'
import random, sys
from echostream.data.manifest import read_manifest, write_manifest
rows = read_manifest(sys.argv[1])
rng = random.Random(13)
write_manifest(sys.argv[3], [r for r in rows if rng.random() < float(sys.argv[2])])
PY
    echostream augment --manifest "$data/train_line_source.jsonl" --out "$data/train_line" --channel --seed 13
  fi
  # tests: 10 minutes of held-out sentences joined by pauses (its sentences one by one are
  # test_voices), and clips without speech
  done_or "$data/test_longform/manifest.jsonl" || echostream manifest join "$data/test_voices/manifest.jsonl" \
    --out "$data/test_longform" --count 1 --sentences 150:150 --pause 0.5:2.0 --seed 14 --id-prefix longform
  done_or "$data/test_longform/parts_manifest.jsonl" || "$PYTHON" - "$data" <<'PY'
import json, sys
from pathlib import Path
from echostream.data.manifest import read_manifest, write_manifest
data = Path(sys.argv[1])
ids = json.loads((data / "test_longform" / "parts.jsonl").read_text().splitlines()[0])["parts"]
rows = {r.id: r for r in read_manifest(data / "test_voices" / "manifest.jsonl")}
write_manifest(data / "test_longform" / "parts_manifest.jsonl", [rows[i] for i in ids])  # one by one
PY
  done_or "$data/test_speechless/manifest.jsonl" || echostream manifest speechless --out "$data/test_speechless" \
    --count 100 --seed 15 --id-prefix test-speechless
fi

if stage_on 3; then
  echo "== stage 3: coverage"
  "$PYTHON" - "$data" <<'PY' | tee "$data/coverage_rendered.txt"
import sys
from pathlib import Path
from echostream.data.manifest import read_manifest
from echostream.text.normalize import DEFAULT_NORMALIZER, normalize_text
data = Path(sys.argv[1])
train = [r for name in ("train", "train_line") for r in read_manifest(data / name / "manifest.jsonl")]
vocabulary = {w for r in train for w in normalize_text(r.text, DEFAULT_NORMALIZER).split()}
print(f"tokenizer training text: {len(train)} utterances, {len(vocabulary)} distinct words")
for name in ("test_voices", "valid"):
    words = [w for r in read_manifest(data / name / "manifest.jsonl") for w in normalize_text(r.text, DEFAULT_NORMALIZER).split()]
    oov = sum(w not in vocabulary for w in words)
    print(f"{name}: {len(words)} words, {oov} out of vocabulary ({100 * oov / max(1, len(words)):.2f}%)")
PY
fi

if stage_on 4; then
  echo "== stage 4: tokenizer"
  done_or "$exp/tokenizer/vocab.txt" || echostream tokenizer train --manifest "$data/train/manifest.jsonl" \
    --manifest "$data/fsdd/train.jsonl" --kind bpe --vocab-size "$vocab" --out "$exp/tokenizer"
fi

if stage_on 5; then
  echo "== stage 5: train"
  echostream train --config "$repo/configs/general_en.yaml" --out "$exp/general" --resume --threads "$threads"
fi

if stage_on 6; then
  echo "== stage 6: average"
  done_or "$exp/general/average.pt" || echostream average --exp "$exp/general" --best "$average" --out "$exp/general/average.pt"
fi

if stage_on 7; then
  echo "== stage 7: evaluate"
  mkdir -p "$exp/general/eval"
  # greedy CTC at the long-form and a streaming setting; the long-form setting re-ranked by the
  # attention decoder too
  for ctx in "64 128 128 greedy" "8 32 8 greedy" "64 128 128 attention_rescoring"; do
    read -r c l r decoding <<<"$ctx"
    for set in test_voices test_new_voices test_festival test_longform longform_parts test_speechless fsdd_heldout librivox; do
      case $set in
        longform_parts) manifest=$data/test_longform/parts_manifest.jsonl ;;
        fsdd_heldout) manifest=$data/fsdd/heldout_speaker.jsonl ;;
        librivox) manifest=$data/librivox.jsonl ;;
        *) manifest=$data/$set/manifest.jsonl ;;
      esac
      result=$exp/general/eval/${set}_c${c}_l${l}_r${r}
      [ "$decoding" = greedy ] || result=${result}_$decoding
      { [ -s "$result.txt" ] || [ ! -s "$manifest" ]; } && continue
      echostream eval --manifest "$manifest" --model "$exp/general/average.pt" --chunk-size "$c" \
        --left-context "$l" --right-context "$r" --decoding "$decoding" --group-by speaker --score-empty --out "$result.jsonl" \
        --threads "$threads" > "$result.txt"
    done
  done
fi

if stage_on 8; then
  echo "== stage 8: RESULTS.md and export"
  assets=${EXPORT:-$repo/src/echostream/assets/general_en}
  mkdir -p "$assets"
  cp "$exp/general/average.pt" "$assets/model.pt"
  "$PYTHON" "$here/results.py" --exp "$exp" --data "$data" --model-card "$assets/README.md"
  echo "exported $assets/model.pt; results in $here/RESULTS.md"
fi
