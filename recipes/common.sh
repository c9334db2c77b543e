# Sourced by recipes/*/run.sh after they set `stage`, `stop_stage` and `repo`: parses
# --stage N / --stop-stage N, picks PYTHON (the active virtualenv, then the repository's .venv,
# then python3), checks that it imports echostream, and defines `echostream` and `stage_on N`.

while [ $# -gt 0 ]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    *) echo "run.sh: unknown argument $1 (use --stage N, --stop-stage N)" >&2; exit 2 ;;
  esac
done
if [ -z "${PYTHON:-}" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON=$VIRTUAL_ENV/bin/python
  elif [ -x "$repo/.venv/bin/python" ]; then PYTHON=$repo/.venv/bin/python
  else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import echostream" 2>/dev/null; then
  echo "run.sh: error: $PYTHON cannot import echostream (install it: see README.md)" >&2; exit 1
fi
echostream() { "$PYTHON" -m echostream.cli.main "$@"; }
stage_on() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
