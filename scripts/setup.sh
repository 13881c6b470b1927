#!/usr/bin/env bash
# Install align into a virtual environment (default .venv), from a bare machine.
#
# torch first: a plain `torch` requirement with no torch installed pulls the multi-GB CUDA build from PyPI.
#   - a torch already in the environment is kept (a GPU user's own build wins);
#   - with an NVIDIA GPU (nvidia-smi present), the default PyPI build (CUDA) is installed;
#   - otherwise the CPU build: ALIGN_TORCH (default torch==2.13.0, which this project's CI machines hold locally);
#     on other CPU-only machines set ALIGN_TORCH_INDEX=https://download.pytorch.org/whl/cpu to get the CPU wheel.
# Then the package itself, editable, with the dev extras (tests, lint).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${ALIGN_EXTRAS:-dev}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[setup] keeping installed torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1; then
  echo "[setup] NVIDIA GPU found: installing torch from PyPI (CUDA build)"
  "${PIP[@]}" "${ALIGN_TORCH:-torch}"
else
  echo "[setup] no GPU: installing the CPU build ${ALIGN_TORCH:-torch==2.13.0}"
  if [ -n "${ALIGN_TORCH_INDEX:-}" ]; then
    "${PIP[@]}" --index-url "$ALIGN_TORCH_INDEX" "${ALIGN_TORCH:-torch==2.13.0}"
  else
    "${PIP[@]}" "${ALIGN_TORCH:-torch==2.13.0}"
  fi
fi

echo "[setup] installing align[$EXTRAS]"
"${PIP[@]}" -e ".[$EXTRAS]"
"$VENV/bin/python" -c "import align, torch, transformers, trl, peft; print('[setup] ok: align', align.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__)"
