# Sourced by recipes/*/run.sh after they set `stage`, `stop_stage` and `repo`: parses
# --stage N / --stop-stage N, picks PYTHON and defines `echostream` (python.sh), and defines
# `stage_on N`.

while [ $# -gt 0 ]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    *) echo "run.sh: unknown argument $1 (use --stage N, --stop-stage N)" >&2; exit 2 ;;
  esac
done
source "$repo/recipes/python.sh"
stage_on() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
