"""The ``echostream`` command. It parses arguments and calls the library; nothing more."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".webm", ".mp4", ".aiff", ".aif"}


class CLIError(Exception):
    """A problem with the command line itself: reported as one line, exit code 2."""


def default_model_path() -> Path | None:
    """The model bundled with the package, if this build has one."""
    path = Path(str(resources.files("echostream"))) / "assets" / "default_model"
    return path if path.exists() else None


def expand_inputs(paths: Sequence[str], list_file: str | None) -> list[str]:
    """Files named on the command line, files under named directories, and a list file's lines."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise CLIError(f"{p}: directory holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            out.extend(found)
        else:
            out.append(p)
    if list_file is not None:
        try:
            lines = Path(list_file).read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise CLIError(f"{list_file}: cannot read list file ({err.strerror})") from None
        except UnicodeDecodeError:
            raise CLIError(f"{list_file}: list file is not UTF-8 text") from None
        base = Path(list_file).parent
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line if Path(line).is_absolute() else str(base / line))
    if not out:
        raise CLIError("no input files: name files or directories, or give --list FILE")
    return out


def _add_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files of any length")
    p.add_argument("inputs", nargs="*", metavar="FILE", help="audio files or directories")
    p.add_argument("--list", dest="list_file", metavar="FILE", help="a file listing audio paths, one per line")
    p.add_argument("--model", help="model folder, checkpoint file or Hugging Face repo id (default: the bundled model)")
    p.add_argument("--chunk-size", type=int, default=64, help="chunk size in encoder frames of 80 ms (default 64)")
    p.add_argument("--left-context", type=int, default=128, help="left context in encoder frames (default 128)")
    p.add_argument("--right-context", type=int, default=128, help="right context in encoder frames (default 128)")
    p.add_argument("--format", choices=["txt", "json", "srt", "vtt"], default="txt")
    p.add_argument("--output-dir", help="write one FILE.<format> per input here instead of printing")
    p.add_argument("--batch-seconds", type=float, default=300.0, help="audio seconds encoded per step (memory bound)")
    p.add_argument("--block-seconds", type=float, default=30.0, help="audio seconds read per input per step")
    p.add_argument("--decoding", choices=["greedy", "prefix_beam", "attention_rescoring"], default="greedy")
    p.add_argument("--beam-size", type=int, default=10, help="beam for prefix_beam / attention_rescoring")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve streaming recognition (WebSocket) and file transcription (HTTP)")
    p.add_argument("--model", help="model folder, checkpoint file or Hugging Face repo id (default: the bundled model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    p.add_argument("--chunk-size", type=int, default=8, help="chunk size in encoder frames of 80 ms (default 8)")
    p.add_argument("--left-context", type=int, default=32, help="left context in encoder frames (default 32)")
    p.add_argument("--right-context", type=int, default=0, help="right context in encoder frames (default 0)")
    p.add_argument("--max-connections", type=int, default=64, help="WebSocket connections served at once (default 64)")
    p.add_argument("--max-message-bytes", type=int, default=1 << 20, help="largest WebSocket message (default 1048576)")
    p.add_argument("--idle-timeout", type=float, default=30.0, help="seconds to wait for a client's next message (default 30)")
    p.add_argument("--max-batch", type=int, default=32, help="streams decoded together in one step (default 32)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")


def _add_client(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("client", help="stream an audio file to a running server and print the results")
    p.add_argument("file", metavar="FILE", help="audio file (8 kHz files are sent at 8 kHz, others at 16 kHz)")
    p.add_argument("--url", default="ws://127.0.0.1:8090/ws", help="server WebSocket URL (default ws://127.0.0.1:8090/ws)")
    p.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                   help="send the audio at the pace it plays (default), or as fast as the server takes it")
    p.add_argument("--chunk-ms", type=int, default=100, help="milliseconds of audio per message (default 100)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="echostream", description="Streaming and long-form speech recognition.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_transcribe(sub)
    _add_serve(sub)
    _add_client(sub)
    _add_manifest(sub)
    _add_tokenizer(sub)
    _add_synth(sub)
    _add_train(sub)
    _add_average(sub)
    _add_eval(sub)
    return parser


def _output_name(source: str, used: set[str]) -> str:
    stem = Path(source).stem or "audio"
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    return name


def run_transcribe(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from echostream.audio import AudioError, audio_duration
    from echostream.model import load_model
    from echostream.transcript import FORMATS

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    files = expand_inputs(args.inputs, args.list_file)
    model_path = args.model or default_model_path()
    if model_path is None:
        raise CLIError("no model is bundled with this build yet: pass --model DIR")
    model = load_model(model_path, device=args.device)
    total = 0.0
    for f in files:
        try:
            total += audio_duration(f)
        except AudioError:
            pass
    started = time.perf_counter()
    with tqdm(total=round(total, 1), unit="s", desc="transcribing", disable=None, file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]") as bar:
        results = model.transcribe(
            files, chunk_size=args.chunk_size, left_context=args.left_context,
            right_context=args.right_context, batch_seconds=args.batch_seconds,
            block_seconds=args.block_seconds, progress=lambda s: bar.update(s),
            decoding=args.decoding, beam_size=args.beam_size,
        )
    wall = time.perf_counter() - started
    write = FORMATS[args.format]
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    failed = 0
    for result in results:
        if not result.ok:
            failed += 1
            print(f"error: {result.error}", file=sys.stderr)
            continue
        text = write(result)
        if out_dir is not None:
            (out_dir / f"{_output_name(result.source, used)}.{args.format}").write_text(text, encoding="utf-8")
        elif args.format == "txt":
            print(f"{result.source}\t{result.text}" if len(results) > 1 else result.text)
        else:
            if len(results) > 1:
                print(f"==> {result.source} <==")
            print(text, end="")
    sys.stdout.flush()  # the transcripts before the summary when both go to one terminal or pipe
    audio = sum(r.duration for r in results if r.ok)
    rtf = wall / audio if audio > 0 else float("nan")
    print(
        f"{len(results) - failed} of {len(results)} files transcribed: {audio:.1f} s of audio "
        f"in {wall:.1f} s (real-time factor {rtf:.3f})",
        file=sys.stderr,
    )
    return 1 if failed else 0


def run_serve(args: argparse.Namespace) -> int:
    import torch

    from echostream.model import load_model
    from echostream.server import ServerConfig, listen, serve

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model_path = args.model or default_model_path()
    if model_path is None:
        raise CLIError("no model is bundled with this build yet: pass --model DIR")
    try:
        config = ServerConfig(
            host=args.host, port=args.port, chunk_size=args.chunk_size, left_context=args.left_context,
            right_context=args.right_context, max_connections=args.max_connections,
            max_message_bytes=args.max_message_bytes, idle_timeout=args.idle_timeout, max_batch=args.max_batch,
        )
    except ValueError as err:
        raise CLIError(str(err).replace("ServerConfig.", "--").replace("_", "-")) from None
    sock = listen(config.host, config.port)  # a busy port is reported before a long model load
    try:
        model = load_model(model_path, device=args.device)
        serve(model, config, model_name=Path(model_path).name or str(model_path), sock=sock)
    finally:
        sock.close()
    return 0


def run_client(args: argparse.Namespace) -> int:
    from echostream.server.client import ClientError, FinalResult, stream_file

    if args.chunk_ms < 1:
        raise CLIError(f"--chunk-ms must be at least 1, got {args.chunk_ms}")
    shown = 0  # characters of the partial line on stderr

    def partial(text: str) -> None:
        nonlocal shown
        sys.stderr.write("\r" + text.ljust(shown))
        sys.stderr.flush()
        shown = len(text)

    def final(result: FinalResult) -> None:
        nonlocal shown
        if shown:
            sys.stderr.write("\r" + " " * shown + "\r")
            sys.stderr.flush()
            shown = 0
        print(result.sentence, flush=True)

    try:
        stream_file(args.file, args.url, realtime=args.realtime, chunk_ms=args.chunk_ms,
                    on_partial=partial, on_final=final)
    except ClientError as err:
        if shown:
            sys.stderr.write("\n")
        print(f"echostream: error: {err}", file=sys.stderr)
        return 1
    return 0


# ---- training data: manifest, tokenizer, synth ------------------------------------------------


def _add_manifest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("manifest", help="import, check and clean utterance manifests (JSONL)")
    verbs = p.add_subparsers(dest="manifest_command", required=True)
    kaldi = verbs.add_parser("import-kaldi", help="a Kaldi data folder (wav.scp, text, [utt2spk, segments])")
    kaldi.add_argument("folder")
    kaldi.add_argument("--out", required=True, help="manifest to write (JSONL)")
    kaldi.add_argument("--audio-root", help="relative wav.scp paths are relative to this (default: current dir)")
    kaldi.add_argument("--language", help="language code for every row")
    folder = verbs.add_parser("import-folder", help="a folder tree of X.wav (or X.flac) + X.txt pairs")
    folder.add_argument("folder")
    folder.add_argument("--out", required=True, help="manifest to write (JSONL)")
    folder.add_argument("--language", help="language code for every row")
    check = verbs.add_parser("validate", help="check rows against their audio; exit 1 if any row is bad")
    check.add_argument("manifest")
    check.add_argument("--out", help="write the good rows to this manifest")
    check.add_argument("--tolerance", type=float, default=0.1, help="seconds a duration may be off (default 0.1)")
    check.add_argument("--decode", action="store_true", help="decode every file in full, not just its header")


def _add_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train tokenizers (vocab.txt in the released ChunkFormer layout)")
    verbs = p.add_subparsers(dest="tokenizer_command", required=True)
    train = verbs.add_parser("train", help="train on a manifest's transcripts and write DIR")
    train.add_argument("--manifest", required=True, action="append", help="manifest (JSONL); repeat for several")
    train.add_argument("--kind", required=True, choices=["bpe", "unigram", "char"])
    train.add_argument("--vocab-size", type=int, help="ids in vocab.txt incl. <blank>, <unk>, <sos/eos> (char: a maximum)")
    train.add_argument("--out", required=True, help="folder for vocab.txt, tokenizer.yaml[, tokenizer.model]")
    train.add_argument("--no-normalize", action="store_true", help="train on the text as written (default: normalised)")


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="render sentences with TTS voices into 16 kHz WAVs and a manifest",
        epilog="voices: espeak (en-us, en-gb, en-gb-scotland, en-gb-x-rp, en-gb-x-gbclan, en-gb-x-gbcwmd, en-029, "
        "en-us-nyc, each alone or +m1..+m7, +f1..+f4), mbrola (mb-us1, mb-us2, mb-us3, mb-en1), flite (slt, kal, "
        "kal16, awb, rms), festival (kal_diphone, cmu_us_slt_arctic_hts; evaluation only). Name an engine or "
        "engine:PATTERN, e.g. 'espeak:en-gb*+f?,flite:slt'. .ci/install-tts installs the engines.",
    )
    p.add_argument("--sentences", required=True, help="text file, one sentence per line ('#' lines skipped)")
    p.add_argument("--out", required=True, help="folder for wav/ and manifest.jsonl")
    p.add_argument("--voices", default="espeak,mbrola,flite", help="engines or engine:PATTERN, comma-separated")
    p.add_argument("--rate", default="0.85:1.2", help="speaking rate factor LOW:HIGH or one value (default 0.85:1.2)")
    p.add_argument("--pitch", default="-2:2", help="pitch shift in semitones LOW:HIGH or one value (default -2:2)")
    p.add_argument("--renditions", type=int, default=1, help="renditions of each sentence (default 1)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--workers", type=int, default=2, help="engine processes at a time (default 2)")
    p.add_argument("--id-prefix", help="utterance id prefix (default: the sentence file's name)")
    p.add_argument("--language", default="en")


def _range(text: str, name: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        values = (float(low), float(high if sep else low))
    except ValueError:
        raise CLIError(f"--{name}: expected LOW:HIGH or one number, got {text!r}") from None
    return values


def _report_problems(problems: Sequence[object], shown: int = 20) -> None:
    for problem in problems[:shown]:
        print(f"warning: {problem}", file=sys.stderr)
    if len(problems) > shown:
        print(f"warning: ... and {len(problems) - shown} more", file=sys.stderr)


def run_manifest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from echostream.data import manifest as m

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
    _report_problems(problems)
    counts = ", ".join(f"{n} {kind}" for kind, n in m.problem_counts(problems).items())
    hours = sum(row.duration for row in good) / 3600
    print(f"{len(good)} good rows ({hours:.2f} h), {len(problems)} set aside" + (f": {counts}" if counts else ""),
          file=sys.stderr)
    if args.manifest_command == "validate":
        return 1 if problems else 0
    return 0 if good else 1


def run_tokenizer(args: argparse.Namespace) -> int:
    from echostream.data.manifest import read_manifest
    from echostream.text.normalize import DEFAULT_NORMALIZER
    from echostream.text.tokenizer import train_tokenizer

    texts = [row.text for path in args.manifest for row in read_manifest(path)]
    normalizer = None if args.no_normalize else DEFAULT_NORMALIZER
    tokenizer = train_tokenizer(texts, args.out, kind=args.kind, vocab_size=args.vocab_size, normalizer=normalizer)
    print(f"{args.kind} tokenizer of {tokenizer.vocab_size} tokens written to {args.out}", file=sys.stderr)
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from echostream.data import synth

    config = synth.SynthConfig(
        rate=_range(args.rate, "rate"), pitch=_range(args.pitch, "pitch"), renditions=args.renditions,
        seed=args.seed, workers=args.workers, id_prefix=args.id_prefix or Path(args.sentences).stem,
        language=args.language,
    )
    sentences = synth.read_sentences(args.sentences)
    selection = synth.select_voices(args.voices)
    reasons: dict[str, list[str]] = {}
    for missing in selection.missing:
        reasons.setdefault(missing.reason, []).append(missing.voice.speaker)
    for reason, speakers in reasons.items():
        print(f"warning: {len(speakers)} voices unavailable ({reason}): {', '.join(speakers)}", file=sys.stderr)
    if any(v.engine == "festival" for v in selection.available):
        print("note: festival voices are for evaluation only; do not train on this output", file=sys.stderr)
    total = len(sentences) * config.renditions
    with tqdm(total=total, unit="utt", desc="synthesising", disable=None, file=sys.stderr) as bar:
        result = synth.synthesize(sentences, args.out, selection.available, config, progress=bar.update)
    _report_problems(result.failures, shown=len(result.failures))
    seconds = sum(row.duration for row in result.rows)
    print(
        f"{len(result.rows)} of {total} utterances ({seconds / 60:.1f} min, "
        f"{len(selection.available)} voices) written to {result.manifest}",
        file=sys.stderr,
    )
    return 0 if result.rows else 1


# ---- training: train, average, eval ----------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train or fine-tune a model (under torchrun: data-parallel across processes)",
        epilog="Distributed: torchrun --nproc_per_node=N -m echostream.cli.main train ... "
        "(gloo on CPU, nccl on GPU; only rank 0 writes).",
    )
    p.add_argument("--config", required=True, help="training config (YAML; see configs/)")
    p.add_argument("--init", help="start from this model: a released folder or an echostream checkpoint")
    p.add_argument("--out", required=True, help="experiment folder (checkpoints, logs, TensorBoard)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (default: torch's choice)")


def _add_average(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("average", help="average the weights of an experiment's best or last checkpoints")
    p.add_argument("--exp", required=True, help="experiment folder written by `echostream train`")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", type=int, metavar="N", help="the N checkpoints with the best validation metric")
    which.add_argument("--last", type=int, metavar="N", help="the N newest checkpoints")
    p.add_argument("--metric", choices=["wer", "loss"], help="metric for --best (default: the run's validation.metric)")
    p.add_argument("--out", required=True, help="checkpoint file to write (load_model reads it)")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="word and character error rates of a model on a manifest")
    p.add_argument("--manifest", required=True, action="append", help="manifest (JSONL); repeat for several")
    p.add_argument("--model", help="model folder, checkpoint file or Hugging Face repo id (default: the bundled model)")
    p.add_argument("--chunk-size", type=int, default=64, help="chunk size in encoder frames of 80 ms (default 64)")
    p.add_argument("--left-context", type=int, default=128, help="left context in encoder frames (default 128)")
    p.add_argument("--right-context", type=int, default=128, help="right context in encoder frames (default 128)")
    p.add_argument("--decoding", choices=["greedy", "prefix_beam", "attention_rescoring"], default="greedy")
    p.add_argument("--beam-size", type=int, default=10)
    p.add_argument("--group-by", choices=["speaker", "language"],
                   help="also score per group: the field's value up to its first ':' (espeak:en-us -> espeak)")
    p.add_argument("--worst", type=int, default=10, help="list this many worst utterances (default 10)")
    p.add_argument("--out", help="write per-utterance results here (JSONL)")
    p.add_argument("--no-normalize", action="store_true", help="score the texts as written (default: normalised)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")


def run_train(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from echostream.training.config import load_train_config
    from echostream.training.distributed import environment
    from echostream.training.trainer import StepReport, train

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_train_config(args.config, init=args.init)
    main_rank = environment().is_main
    bar = tqdm(total=cfg.max_steps or None, unit="step", desc="training", disable=None if main_rank else True,
               file=sys.stderr, dynamic_ncols=True)

    def on_step(report: StepReport) -> None:
        if bar.n == 0 and report.step > 1:
            bar.n = report.step - 1  # resumed
        bar.set_postfix_str(
            f"epoch {report.epoch} loss {report.loss:.3f} lr {report.lr:.2e} "
            f"{report.audio_per_second:.1f} audio s/s", refresh=False,
        )
        bar.update(1)

    def on_message(text: str) -> None:
        bar.write(text, file=sys.stderr)

    try:
        result = train(cfg, args.out, resume=args.resume, on_step=on_step, on_message=on_message)
    finally:
        bar.close()
    if main_rank:
        best = next((v for v in result.validations if v.step == result.best_step), None)
        summary = f"stopped at step {result.step} (epoch {result.epoch})" + (" early" if result.stopped_early else "")
        if best is not None:
            summary += f"; best validation at step {best.step}: WER {100 * best.wer:.2f}%, loss {best.loss:.3f}"
        print(f"{summary}; checkpoints in {Path(args.out) / 'checkpoints'}", file=sys.stderr)
    return 0


def run_average(args: argparse.Namespace) -> int:
    from echostream.models.checkpoint import save_checkpoint
    from echostream.training.config import read_saved_config
    from echostream.training.experiment import CONFIG_FILE, average_checkpoints, choose_checkpoints

    count = args.best if args.best is not None else args.last
    if count < 1:
        raise CLIError(f"--{'best' if args.best is not None else 'last'} must be at least 1, got {count}")
    metric = args.metric
    if metric is None:
        saved = Path(args.exp) / CONFIG_FILE
        metric = read_saved_config(saved).validation.metric if saved.is_file() else "wer"
    paths = choose_checkpoints(args.exp, "best" if args.best is not None else "last", count, metric)
    bundle = average_checkpoints(paths)
    save_checkpoint(args.out, bundle, averaged=[p.name for p in paths])
    print(f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)}) into {args.out}", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from echostream.data.manifest import read_manifest
    from echostream.model import load_model
    from echostream.text.normalize import DEFAULT_NORMALIZER
    from echostream.training.evaluation import evaluate, format_report, write_results

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = [row for path in args.manifest for row in read_manifest(path)]
    if not rows:
        raise CLIError("the manifests hold no rows")
    model_path = args.model or default_model_path()
    if model_path is None:
        raise CLIError("no model is bundled with this build yet: pass --model DIR")
    model = load_model(model_path, device=args.device)
    seconds = sum(row.duration for row in rows)
    with tqdm(total=round(seconds, 1), unit="s", desc="decoding", disable=None, file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]") as bar:
        report = evaluate(
            model, rows, chunk_size=args.chunk_size, left_context=args.left_context,
            right_context=args.right_context, decoding=args.decoding, beam_size=args.beam_size,
            normalizer=None if args.no_normalize else DEFAULT_NORMALIZER, group_by=args.group_by,
            progress=lambda s: bar.update(s),
        )
    for failure in report.failed[:20]:
        print(f"warning: {failure}", file=sys.stderr)
    print(format_report(report, worst=args.worst, group_by=args.group_by))
    if args.out:
        write_results(args.out, report)
        print(f"per-utterance results written to {args.out}", file=sys.stderr)
    return 0 if report.utterances else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "transcribe":
            return run_transcribe(args)
        if args.command == "serve":
            return run_serve(args)
        if args.command == "client":
            return run_client(args)
        if args.command == "manifest":
            return run_manifest(args)
        if args.command == "tokenizer":
            return run_tokenizer(args)
        if args.command == "synth":
            return run_synth(args)
        if args.command == "train":
            return run_train(args)
        if args.command == "average":
            return run_average(args)
        if args.command == "eval":
            return run_eval(args)
        raise CLIError(f"unknown command {args.command}")  # pragma: no cover - argparse prevents it
    except CLIError as err:
        if args.debug:
            raise
        print(f"echostream: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:  # CheckpointError, AudioError, ConfigError are ValueErrors
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"echostream: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("echostream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
