"""``echostream manifest``, ``tokenizer`` and ``synth``: training data."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from echostream.cli.common import CLIError, parser_of, report_problems
from echostream.extras import require

if TYPE_CHECKING:
    from echostream.data.augment import ConditionsConfig
    from echostream.data.synth import VoiceSelection


def add_manifest_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(sub, "manifest", help="import, check and clean utterance manifests (JSONL)")
    verbs = p.add_subparsers(dest="manifest_command", required=True)
    kaldi = parser_of(verbs, "import-kaldi", help="a Kaldi data folder (wav.scp, text, [utt2spk, segments])")
    kaldi.add_argument("folder", help="the Kaldi data folder")
    kaldi.add_argument("--out", required=True, help="manifest to write (JSONL)")
    kaldi.add_argument("--audio-root", help="relative wav.scp paths are relative to this (default: current dir)")
    kaldi.add_argument("--language", help="language code for every row")
    folder = parser_of(verbs, "import-folder", help="a folder tree of X.wav (or X.flac) + X.txt pairs")
    folder.add_argument("folder", help="the folder tree to import")
    folder.add_argument("--out", required=True, help="manifest to write (JSONL)")
    folder.add_argument("--language", help="language code for every row")
    check = parser_of(verbs, "validate", help="check rows against their audio; exit 1 if any row is bad")
    check.add_argument("manifest", help="manifest to check (JSONL)")
    check.add_argument("--out", help="write the good rows to this manifest")
    check.add_argument("--tolerance", type=float, default=0.1, help="seconds a duration may be off")
    check.add_argument("--decode", action="store_true", help="decode every file in full, not just its header")
    join = parser_of(verbs, "join", help="several rows joined by pauses into long-form files (transcripts joined)")
    join.add_argument("manifest", help="rows to draw from (JSONL)")
    join.add_argument("--out", required=True, help="folder for wav/ and manifest.jsonl")
    join.add_argument("--count", type=int, required=True, help="joined files to write")
    join.add_argument("--sentences", default="2:5", help="rows per file LOW:HIGH")
    join.add_argument("--pause", default="0.3:1.5", help="seconds between rows LOW:HIGH")
    join.add_argument("--seed", type=int, default=0, help="seed of every draw")
    join.add_argument("--id-prefix", default="joined", help="ids are PREFIX-00000, ...")
    quiet = parser_of(verbs, "speechless", help="clips without speech (silence, noise, tones) with empty transcripts")
    quiet.add_argument("--out", required=True, help="folder for wav/ and manifest.jsonl")
    quiet.add_argument("--count", type=int, required=True, help="clips to write")
    quiet.add_argument("--kinds", default="silence,white,pink,brown,tones", help="kinds, comma-separated, in turn")
    quiet.add_argument("--duration", default="1:8", help="seconds LOW:HIGH")
    quiet.add_argument("--level", default="-50:-15", help="RMS level in dBFS LOW:HIGH (silence is digital zero)")
    quiet.add_argument("--seed", type=int, default=0, help="seed of every draw")
    quiet.add_argument("--id-prefix", default="speechless", help="ids are PREFIX-00000, ...")


def add_tokenizer_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(sub, "tokenizer", help="train tokenizers (vocab.txt in the released ChunkFormer layout)")
    verbs = p.add_subparsers(dest="tokenizer_command", required=True)
    train = parser_of(verbs, "train", help="train on a manifest's transcripts and write DIR")
    train.add_argument("--manifest", required=True, action="append", help="manifest (JSONL); repeat for several")
    train.add_argument("--kind", required=True, choices=["bpe", "unigram", "char"],
                       help="SentencePiece BPE or unigram pieces, or characters")
    train.add_argument("--vocab-size", type=int, help="ids in vocab.txt incl. <blank>, <unk>, <sos/eos> (char: a maximum)")
    train.add_argument("--out", required=True, help="folder for vocab.txt, tokenizer.yaml[, tokenizer.model]")
    train.add_argument("--no-normalize", action="store_true", help="train on the text as written (default: normalised)")


def add_synth_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(
        sub, "synth", help="render sentences with TTS voices into 16 kHz WAVs and a manifest",
        epilog="voices: espeak (en-us, en-gb, en-gb-scotland, en-gb-x-rp, en-gb-x-gbclan, en-gb-x-gbcwmd, en-029, "
        "en-us-nyc, each alone or +m1..+m7, +f1..+f4), mbrola (mb-us1, mb-us2, mb-us3, mb-en1), flite (slt, kal, "
        "kal16, awb, rms), rhvoice (alan, bdl, clb, slt), pico (en-US, en-GB), piper (joe), hibari (heart), "
        "festival (kal_diphone, "
        "cmu_us_slt_arctic_hts; evaluation only). Any slt voice is for evaluation only. Name an engine or "
        "engine:PATTERN, e.g. 'espeak:en-gb*+f?,flite:slt'. .ci/install-tts installs the engines.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--sentences", help="text file, one sentence per line ('#' lines skipped)")
    what.add_argument("--dialogues", help="JSONL calls ({id, turns: [{role: agent|customer, text}]}): each call "
                                          "a stereo WAV (agent left, customer right), one manifest row per turn")
    p.add_argument("--out", required=True, help="folder for wav/ and manifest.jsonl")
    p.add_argument("--voices", default="espeak,mbrola,flite", help="engines or engine:PATTERN, comma-separated")
    p.add_argument("--rate", default="0.85:1.2", help="speaking rate factor LOW:HIGH or one value")
    p.add_argument("--pitch", default="-2:2", help="pitch shift in semitones LOW:HIGH or one value")
    p.add_argument("--renditions", type=int, default=1, help="renditions of each sentence")
    p.add_argument("--pause", default="0.2:0.9", help="--dialogues: seconds between turns LOW:HIGH")
    p.add_argument("--overlap", default="0.1:0.4", help="--dialogues: seconds a turn may start early LOW:HIGH")
    p.add_argument("--overlap-probability", type=float, default=0.2,
                   help="--dialogues: share of turns that start before the other side has finished")
    p.add_argument("--seed", type=int, required=True, help="seed of the rate, pitch and voice draws (same seed: same audio)")
    p.add_argument("--workers", type=int, default=2, help="engine processes at a time")
    p.add_argument("--id-prefix", help="utterance id prefix (default: the sentence file's name)")
    p.add_argument("--language", default="en", help="language code written to every row")


def add_augment_parser(sub: argparse._SubParsersAction) -> None:
    p = parser_of(
        sub, "augment",
        help="write copies of a manifest's audio through a room, noise and a telephone line (e.g. telephony data)",
        epilog="Each row's conditions are drawn from --seed and its id; OUT/conditions.jsonl lists them (codec, "
               "SNR, RT60) for error rates per condition. Codecs: pcm, mulaw, alaw, gsm, amr-nb (sox), g722, g726, "
               "speex, codec2, opus (ffmpeg); packet-loss concealment by opus needs opus-tools.",
    )
    p.add_argument("--manifest", required=True, action="append", help="manifest (JSONL); repeat for several")
    p.add_argument("--out", required=True, help="folder for wav/, manifest.jsonl and conditions.jsonl")
    p.add_argument("--config", help="YAML with reverb, noise and channel sections (echostream.data.augment."
                                    "ConditionsConfig); the switches below start from the defaults instead")
    p.add_argument("--channel", action="store_true", help="a telephone line for every row (8 kHz output)")
    p.add_argument("--codecs", help="the line's codecs, comma-separated, drawn with equal weights (default: all)")
    p.add_argument("--noise", action="store_true", help="white, pink or brown noise")
    p.add_argument("--snr", default="5:15", help="SNR in dB, LOW:HIGH or one value (with --noise)")
    p.add_argument("--reverb", action="store_true", help="a room")
    p.add_argument("--rt60", default="0.05:0.15", help="RT60 in seconds, LOW:HIGH or one value (with --reverb)")
    p.add_argument("--seed", type=int, default=0, help="seed of every draw (same seed: same audio)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (one per core unless given)")


def _conditions(args: argparse.Namespace) -> ConditionsConfig:
    from echostream.config import from_dict, load_yaml
    from echostream.data.augment import ConditionsConfig

    if args.config:
        if args.channel or args.noise or args.reverb or args.codecs:
            raise CLIError("--config replaces --channel, --codecs, --noise and --reverb; give one or the other")
        return load_yaml(ConditionsConfig, args.config)
    sections: dict[str, object] = {}
    if args.channel or args.codecs:
        codecs = [c.strip() for c in args.codecs.split(",") if c.strip()] if args.codecs else None
        sections["channel"] = {"codecs": codecs, "codec_weights": [1.0] * len(codecs)} if codecs else {}
    if args.noise:
        sections["noise"] = {"snr_db": list(_range(args.snr, "snr"))}
    if args.reverb:
        sections["reverb"] = {"rt60": list(_range(args.rt60, "rt60"))}
    if not sections:
        raise CLIError("nothing to do: give --channel, --noise, --reverb or --config")
    return from_dict(ConditionsConfig, sections, "augment")


def run_augment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from echostream.data.augment import augment_manifest
    from echostream.data.manifest import read_manifest

    if args.jobs < 1:
        raise CLIError(f"--jobs must be at least 1, got {args.jobs}")
    conditions = _conditions(args)
    rows = [row for path in args.manifest for row in read_manifest(path)]
    if not rows:
        raise CLIError("the manifests hold no rows")
    with tqdm(total=len(rows), unit="utt", desc="augmenting", disable=None, file=sys.stderr) as bar:
        written, failed = augment_manifest(rows, args.out, conditions, seed=args.seed, jobs=args.jobs,
                                           progress=bar.update)
    report_problems(failed)
    print(f"{len(written)} of {len(rows)} utterances written to {Path(args.out) / 'manifest.jsonl'}"
          + (f"; {len(failed)} left out" if failed else ""), file=sys.stderr)
    return 0 if written else 1


def _range(text: str, name: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        values = (float(low), float(high if sep else low))
    except ValueError:
        raise CLIError(f"--{name}: expected LOW:HIGH or one number, got {text!r}") from None
    return values


def run_manifest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from echostream.data import manifest as m

    if args.manifest_command in ("join", "speechless"):
        return _compose(args)
    if args.manifest_command == "validate":
        rows = m.read_manifest(args.manifest)
        with tqdm(total=len(rows), unit="row", desc="validating", disable=None, file=sys.stderr) as bar:
            good, problems = m.validate_manifest(
                rows, tolerance=args.tolerance, decode=args.decode, progress=bar.update
            )
        if args.out:
            m.write_manifest(args.out, good)
    else:
        if args.manifest_command == "import-kaldi":
            good, problems = m.import_kaldi_dir(args.folder, audio_root=args.audio_root, language=args.language)
        else:
            good, problems = m.import_paired_dir(args.folder, language=args.language)
        m.write_manifest(args.out, good)
    report_problems(problems)
    counts = ", ".join(f"{n} {kind}" for kind, n in m.problem_counts(problems).items())
    hours = sum(row.duration for row in good) / 3600
    print(f"{len(good)} good rows ({hours:.2f} h), {len(problems)} set aside" + (f": {counts}" if counts else ""),
          file=sys.stderr)
    if args.manifest_command == "validate":
        return 1 if problems else 0
    return 0 if good else 1


def _compose(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from echostream.data import compose
    from echostream.data.manifest import read_manifest

    if args.count < 1:
        raise CLIError(f"--count must be at least 1, got {args.count}")
    if args.manifest_command == "speechless":
        rows = compose.speechless(
            args.out, args.count, kinds=[k.strip() for k in args.kinds.split(",") if k.strip()],
            duration=_range(args.duration, "duration"), level_db=_range(args.level, "level"), seed=args.seed,
            id_prefix=args.id_prefix,
        )
        print(f"{len(rows)} clips without speech written to {Path(args.out) / 'manifest.jsonl'}", file=sys.stderr)
        return 0
    low, high = _range(args.sentences, "sentences")
    config = compose.JoinConfig(sentences=(int(low), int(high)), pause=_range(args.pause, "pause"), seed=args.seed)
    source = read_manifest(args.manifest)
    with tqdm(total=args.count, unit="file", desc="joining", disable=None, file=sys.stderr) as bar:
        rows, failures = compose.join_utterances(source, args.out, args.count, config, id_prefix=args.id_prefix,
                                                 progress=bar.update)
    report_problems(failures)
    print(f"{len(rows)} joined files ({sum(r.duration for r in rows) / 60:.1f} min) written to "
          f"{Path(args.out) / 'manifest.jsonl'}", file=sys.stderr)
    return 0 if rows else 1


def run_tokenizer(args: argparse.Namespace) -> int:
    if args.kind != "char":  # SentencePiece
        require("train", f"echostream tokenizer --kind {args.kind}")
    from echostream.data.manifest import read_manifest
    from echostream.text.normalize import DEFAULT_NORMALIZER
    from echostream.text.tokenizer import train_tokenizer

    texts = [row.text for path in args.manifest for row in read_manifest(path)]
    normalizer = None if args.no_normalize else DEFAULT_NORMALIZER
    tokenizer = train_tokenizer(texts, args.out, kind=args.kind, vocab_size=args.vocab_size, normalizer=normalizer)
    print(f"{args.kind} tokenizer of {tokenizer.vocab_size} tokens written to {args.out}", file=sys.stderr)
    return 0


def _voices(spec: str) -> VoiceSelection:
    """The voices ``spec`` names, with warnings for the missing ones and evaluation-only ones."""
    from echostream.data import synth

    selection = synth.select_voices(spec)
    reasons: dict[str, list[str]] = {}
    for missing in selection.missing:
        reasons.setdefault(missing.reason, []).append(missing.voice.speaker)
    for reason, speakers in reasons.items():
        print(f"warning: {len(speakers)} voices unavailable ({reason}): {', '.join(speakers)}", file=sys.stderr)
    if any(v.engine == "festival" for v in selection.available):
        print("note: festival voices are for evaluation only; do not train on this output", file=sys.stderr)
    elif any(synth.is_evaluation_speaker(v) for v in selection.available):
        print("note: the CMU ARCTIC speaker slt is for evaluation only, in every engine; do not train on "
              "this output", file=sys.stderr)
    return selection


def _run_dialogues(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from echostream.data.dialogue import CallConfig, read_dialogues, render_dialogues

    config = CallConfig(
        pause=_range(args.pause, "pause"), overlap=_range(args.overlap, "overlap"),
        overlap_probability=args.overlap_probability, rate=_range(args.rate, "rate"),
        pitch=_range(args.pitch, "pitch"), seed=args.seed, workers=args.workers,
    )
    dialogues = read_dialogues(args.dialogues)
    selection = _voices(args.voices)
    with tqdm(total=len(dialogues), unit="call", desc="rendering calls", disable=None, file=sys.stderr) as bar:
        rows, failures = render_dialogues(dialogues, args.out, selection.available, config, progress=bar.update)
    report_problems(failures, shown=len(failures))
    seconds = sum(row.duration for row in rows)
    print(f"{len(dialogues) - len(failures)} of {len(dialogues)} calls ({len(rows)} turns, {seconds / 60:.1f} min "
          f"of speech) written to {Path(args.out) / 'manifest.jsonl'}", file=sys.stderr)
    return 0 if rows else 1


def run_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from echostream.data import synth

    if args.dialogues:
        return _run_dialogues(args)
    config = synth.SynthConfig(
        rate=_range(args.rate, "rate"), pitch=_range(args.pitch, "pitch"), renditions=args.renditions,
        seed=args.seed, workers=args.workers, id_prefix=args.id_prefix or Path(args.sentences).stem,
        language=args.language,
    )
    sentences = synth.read_sentences(args.sentences)
    selection = _voices(args.voices)
    total = len(sentences) * config.renditions
    with tqdm(total=total, unit="utt", desc="synthesising", disable=None, file=sys.stderr) as bar:
        result = synth.synthesize(sentences, args.out, selection.available, config, progress=bar.update)
    report_problems(result.failures, shown=len(result.failures))
    seconds = sum(row.duration for row in result.rows)
    print(
        f"{len(result.rows)} of {total} utterances ({seconds / 60:.1f} min, "
        f"{len(selection.available)} voices) written to {result.manifest}",
        file=sys.stderr,
    )
    return 0 if result.rows else 1
