# Sourced by the recipe scripts after they set `repo`: picks PYTHON (the active virtualenv, then
# the repository's .venv, then python3), checks that it imports echostream, and defines
# `echostream` (the command line through that Python).

if [ -z "${PYTHON:-}" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON=$VIRTUAL_ENV/bin/python
  elif [ -x "$repo/.venv/bin/python" ]; then PYTHON=$repo/.venv/bin/python
  else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import echostream" 2>/dev/null; then
  echo "$(basename "$0"): error: $PYTHON cannot import echostream (install it: see README.md)" >&2; exit 1
fi
echostream() { "$PYTHON" -m echostream.cli.main "$@"; }
