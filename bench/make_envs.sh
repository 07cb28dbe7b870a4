#!/usr/bin/env bash
# The comparison environments of bench/bench_capture_vs_hooks.py, one virtual environment per tool whose
# dependencies could clash with tnstore's: bench/envs/<tool>/ (ignored by git). Re-running keeps what exists.
#
#     bash bench/make_envs.sh            # nnsight and TransformerLens
#     PYTHON=python3.11 bash bench/make_envs.sh
#
# torch is installed first, from the same pin as tnstore's own environment (the Makefile's TORCH), so that a
# tool's `torch` requirement is already met and pip never swaps in another build (e.g. a multi-GB CUDA one).
# transformers is pinned to the version tnstore's .venv has, so every tool runs the same model code.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
TRANSFORMERS=${TRANSFORMERS:-transformers==5.24.0}
declare -A TOOLS=(
    [nnsight]="nnsight==0.8.1"
    [transformer-lens]="transformer-lens==4.3.0"
)
for tool in "${!TOOLS[@]}"; do
    env="envs/$tool"
    if [[ -f "$env/.installed" ]]; then
        echo "$env: already there"; continue
    fi
    "$PYTHON" -m venv "$env"
    "$env/bin/python" -m pip install -q --upgrade pip
    "$env/bin/python" -m pip install -q $TORCH
    # The tool with its dependencies, torch held at the build just installed.
    "$env/bin/python" -m pip install -q "$TRANSFORMERS" ${TOOLS[$tool]} "$("$env/bin/python" -c 'import torch; print("torch==" + torch.__version__)')"
    "$env/bin/python" -m pip freeze > "$env/freeze.txt"
    touch "$env/.installed"
    echo "$env: $(grep -iE "^(torch|transformers|nnsight|transformer.lens)==" "$env/freeze.txt" | tr '\n' ' ')"
done
