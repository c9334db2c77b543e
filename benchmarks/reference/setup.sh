#!/usr/bin/env bash
# Build the venv that runs the reference ChunkFormer package (chunkformer==1.2.2) for the
# benchmarks' same-run baseline and the stub's parity test:
#   benchmarks/reference/setup.sh [VENV]        (default: .venv-reference in the repository)
# Then: PYTHONPATH=benchmarks/reference VENV/bin/python -c "import chunkformer"
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-$here/../../.venv-reference}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q -r "$here/requirements.txt"
"$venv/bin/pip" install -q --no-deps chunkformer==1.2.2
PYTHONPATH="$here" "$venv/bin/python" -c "import chunkformer; print('reference chunkformer', chunkformer.__version__, 'in', '$venv')"
