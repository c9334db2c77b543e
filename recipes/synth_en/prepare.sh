#!/usr/bin/env bash
# Prepare the synth_en corpus: TTS-rendered English sentences plus real spoken digits (FSDD).
#
#   recipes/synth_en/prepare.sh [OUT]        (default OUT: recipes/synth_en/data)
#
# Environment: PYTHON (an interpreter with echostream installed; default: the active virtualenv,
# then the repository's .venv, then python3), TRAIN_RENDITIONS (renditions of each training
# sentence, default 2), SEED (default 1).
#
# Writes, each with wav/ and manifest.jsonl (speaker = engine:voice):
#   OUT/train               train.txt, training voices
#   OUT/heldout             heldout.txt, training voices        (new text)
#   OUT/heldout_new_voices  heldout.txt, held-out voice variants (new text, new voices)
#   OUT/eval_festival       heldout.txt, festival voices         (evaluation only: never train on it)
#   OUT/fsdd/train.jsonl, OUT/fsdd/test.jsonl                    (real 8 kHz digits, referenced in place)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$here/data}
fsdd=$repo/../shared/data/fsdd
renditions=${TRAIN_RENDITIONS:-2}
seed=${SEED:-1}

source "$repo/recipes/python.sh"

# Voices. Training never uses festival, nor the variants kept for heldout_new_voices, nor any voice
# of the CMU ARCTIC speaker slt (flite's slt, festival's cmu_us_slt_arctic_hts): it is reserved for
# evaluation in every engine.
TRAIN_VOICES='espeak:*+m[1-5],espeak:*+f[1-3],mbrola:mb-us1,mbrola:mb-us2,mbrola:mb-en1,flite:kal,flite:kal16,flite:awb'
NEW_VOICES='espeak:*+m[67],espeak:*+f4,mbrola:mb-us3,flite:rms'
EVAL_ONLY_VOICES='festival'

echo "== TTS engines"
bash "$repo/.ci/install-tts" || echo "prepare.sh: warning: .ci/install-tts failed; synthesising with the voices there are" >&2

echo "== sentences"
"$PYTHON" "$here/sentences/generate.py" --check

echo "== train"
echostream synth --sentences "$here/sentences/train.txt" --out "$out/train" --voices "$TRAIN_VOICES" \
  --renditions "$renditions" --seed "$seed" --id-prefix train
echo "== heldout (training voices)"
echostream synth --sentences "$here/sentences/heldout.txt" --out "$out/heldout" --voices "$TRAIN_VOICES" \
  --seed "$((seed + 1))" --id-prefix heldout
echo "== heldout (new voices)"
echostream synth --sentences "$here/sentences/heldout.txt" --out "$out/heldout_new_voices" --voices "$NEW_VOICES" \
  --seed "$((seed + 2))" --id-prefix heldout-new
echo "== evaluation only (festival)"
echostream synth --sentences "$here/sentences/heldout.txt" --out "$out/eval_festival" --voices "$EVAL_ONLY_VOICES" \
  --seed "$((seed + 3))" --id-prefix eval-festival \
  || echo "prepare.sh: warning: no festival voice; eval_festival skipped" >&2

echo "== fsdd"
if [ -d "$fsdd" ]; then
  "$PYTHON" "$here/fsdd_manifest.py" --fsdd "$fsdd" --out "$out/fsdd"
else
  echo "prepare.sh: warning: $fsdd not found; fsdd skipped" >&2
fi

echo "== validate"
status=0
for manifest in "$out"/train/manifest.jsonl "$out"/heldout/manifest.jsonl \
  "$out"/heldout_new_voices/manifest.jsonl "$out"/eval_festival/manifest.jsonl \
  "$out"/fsdd/train.jsonl "$out"/fsdd/test.jsonl; do
  [ -f "$manifest" ] || continue
  echo "$manifest"
  echostream manifest validate "$manifest" || status=1
done
exit $status
