#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install reglab with every extra.
# torch is pinned to the CPU build first so that no dependency can pull a CUDA build.
set -euo pipefail
py="${1:-python3}"
venv="${2:-.venv}"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e ".[all,dev]" "torch==2.13.0"
"$venv/bin/python" - <<'PY'
import torch
assert "+cpu" in torch.__version__ or not torch.version.cuda, f"unexpected torch build {torch.__version__}"
print(f"reglab environment ready: torch {torch.__version__}")
PY
