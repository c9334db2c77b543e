#!/usr/bin/env bash
# Call-bot fine-tuning, end to end: call-centre dialogues rendered as two-sided calls, a telephony
# copy through simulated telephone lines, ONE fine-tuning step of a trained model on telephony 80 %
# + conversation 20 % (echostream finetune, the ChunkFormer team's recipe), and the evaluation
# before and after per codec and per SNR band.
#
#   recipes/callbot/run.sh [--stage N] [--stop-stage N]
#
# Stages (each skips what an earlier run finished, so the script can be rerun after a stop):
#   0  text        dialogues.py: train (CALLS calls), valid (40 calls of the training phrasings,
#                  other draws), test (80 calls of held-out phrasings and fill-ins)
#   1  calls       echostream synth --dialogues: stereo calls, agent left, customer right;
#                  train/valid with training voices, test with held-out voices
#   2  telephony   echostream augment --channel: every turn through a drawn telephone line
#                  (8 kHz, band-pass, codec, packet loss, clipping); the test turns through drawn
#                  lines with noise, and a quarter of them per codec and per SNR band
#   3  finetune    echostream finetune --init INIT (default: the bundled default model)
#   4  evaluate    INIT and the fine-tuned model on every test set -> exp/eval/*.txt, RESULTS.md
#   5  export      (only when asked for: --stage 5) the fine-tuned model and its card -> EXPORT
#                  (default src/echostream/assets/callbot; BUNDLED_MODELS in model.py names it)
#
# Environment: PYTHON (as in recipes/synth_en), INIT (default: default), FSDD_TEST (the real-speech
# test: the FSDD speaker recipes/general_en holds out), CALLS (training calls,
# default 600), EXP (default recipes/callbot/exp), FINETUNE_ARGS (extra echostream finetune
# arguments, e.g. "--lr 1e-4"), READ (read-speech sources, "MANIFEST:WEIGHT ..."), MAX_STEPS
# (default 2000), WARMUP (warm-up steps, default 200), MOH (a hold-music folder, default Debian's
# /usr/share/asterisk/moh), THREADS, EXPORT.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
data=$here/data
exp=${EXP:-$here/exp}
init=${INIT:-default}
calls=${CALLS:-600}
MOH=${MOH:-/usr/share/asterisk/moh}
threads=${THREADS:-0}
stage=0
stop_stage=4
source "$repo/recipes/common.sh"

# The voices of recipes/general_en (the default model this fine-tunes): training voices for the
# training and validation calls, its held-out voices for the test calls.
source "$repo/recipes/general_en/voices.sh"
TEST_VOICES=$NEW_VOICES
CODECS=(mulaw alaw gsm amr-nb g722 g726 speex codec2 opus)
SNR_BANDS=(5:10 10:15 15:20)

if stage_on 0; then
  echo "== stage 0: dialogue text"
  mkdir -p "$data"
  [ -s "$data/train.jsonl" ] || "$PYTHON" "$here/dialogues.py" --split train --calls "$calls" --seed 1 > "$data/train.jsonl"
  [ -s "$data/valid.jsonl" ] || "$PYTHON" "$here/dialogues.py" --split train --calls 40 --seed 7 > "$data/valid.jsonl"
  [ -s "$data/test.jsonl" ] || "$PYTHON" "$here/dialogues.py" --split heldout --calls 80 --seed 2 > "$data/test.jsonl"
fi

if stage_on 1; then
  echo "== stage 1: two-sided calls"
  for set in train valid test; do
    [ -s "$data/calls_$set/manifest.jsonl" ] && continue
    voices=$TRAIN_VOICES; [ "$set" = test ] && voices=$TEST_VOICES
    echostream synth --dialogues "$data/$set.jsonl" --out "$data/calls_$set" --voices "$voices" --seed 11
  done
fi

if stage_on 2; then
  echo "== stage 2: telephone lines"
  line() {  # line OUT MANIFEST SEED [augment options]
    local out=$1 manifest=$2 seed=$3; shift 3
    [ -s "$out/manifest.jsonl" ] || echostream augment --manifest "$manifest" --out "$out" --seed "$seed" "$@"
  }
  line "$data/telephony_train" "$data/calls_train/manifest.jsonl" 21 --channel
  line "$data/telephony_valid" "$data/calls_valid/manifest.jsonl" 22 --channel
  line "$data/test_line" "$data/calls_test/manifest.jsonl" 23 --channel --noise --snr 5:15
  # per codec and per SNR band: every fourth test turn (about 280 turns, 11 minutes) each
  awk 'NR % 4 == 1' "$data/calls_test/manifest.jsonl" > "$data/calls_test/quarter.jsonl"
  for codec in "${CODECS[@]}"; do
    line "$data/test_codec_$codec" "$data/calls_test/quarter.jsonl" 24 --channel --codecs "$codec"
  done
  for band in "${SNR_BANDS[@]}"; do
    line "$data/test_snr_${band/:/-}" "$data/calls_test/quarter.jsonl" 25 --channel --noise --snr "$band"
  done
fi

if stage_on 3; then
  echo "== stage 3: fine-tune $init"
  # Noise: the recipe's white/pink/brown, plus babble of the training calls and hold music where
  # Debian's asterisk-moh-opsound-wav is installed. Warm-up: the recipe's 2000 steps are sized for
  # a run of many thousand steps; an epoch here is about 520 steps, so WARMUP (default 200) keeps
  # the recipe's peak lr (5e-5) with a warm-up of about a tenth of the run, and validation every
  # 100 steps lets early stopping act within it. MAX_STEPS (default 2000, about 4 epochs) is the
  # run of RESULTS.md, what one working session allowed; 0 runs the recipe's up to 20 epochs.
  music=(); [ -d "$MOH" ] && music=(--music-dir "$MOH")
  # READ: read speech beside the calls, the recipe's optional 10-20 %, as MANIFEST:WEIGHT items
  # (weights relative to telephony 0.8 and conversation 0.2), e.g. the starting model's own data
  # so that it keeps what the calls do not hold (isolated real digits: RESULTS.md).
  read=(); for source in ${READ:-}; do read+=(--data "$source"); done
  # shellcheck disable=SC2086  # FINETUNE_ARGS is a list of arguments
  echostream finetune --init "$init" --data "$data/telephony_train/manifest.jsonl:0.8" \
    --data "$data/calls_train/manifest.jsonl:0.2" --valid "$data/telephony_valid/manifest.jsonl" \
    --babble "$data/calls_train/manifest.jsonl" "${music[@]}" "${read[@]}" \
    --warmup-steps "${WARMUP:-200}" --valid-every 100 --max-steps "${MAX_STEPS:-2000}" \
    --out "$exp/finetune" --threads "$threads" ${FINETUNE_ARGS:-}
fi

if stage_on 4; then
  echo "== stage 4: evaluate"
  mkdir -p "$exp/eval"
  sets=(test_line calls_test)
  for codec in "${CODECS[@]}"; do sets+=("test_codec_$codec"); done
  for band in "${SNR_BANDS[@]}"; do sets+=("test_snr_${band/:/-}"); done
  fsdd=${FSDD_TEST:-$repo/recipes/general_en/data/fsdd/heldout_speaker.jsonl}  # real 8 kHz, a speaker the default model never heard
  for model in init finetuned; do
    path=$init; [ $model = finetuned ] && path=$exp/finetune/model
    for set in "${sets[@]}" fsdd_test; do
      manifest=$data/$set/manifest.jsonl; [ $set = fsdd_test ] && manifest=$fsdd
      result=$exp/eval/${model}_$set
      [ -s "$result.txt" ] || [ ! -s "$manifest" ] && continue
      echostream eval --manifest "$manifest" --model "$path" --out "$result.jsonl" --threads "$threads" \
        --worst 5 > "$result.txt"
    done
  done
  "$PYTHON" "$here/results.py" --exp "$exp" --init "$init"
fi

if stage_on 5; then
  echo "== stage 5: export"
  assets=${EXPORT:-$repo/src/echostream/assets/callbot}
  mkdir -p "$assets"
  cp "$exp/finetune/model/model.pt" "$assets/"
  "$PYTHON" "$here/results.py" --exp "$exp" --init "$init" --card "$assets/README.md"
  echo "exported $assets"
fi
