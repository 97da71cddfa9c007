#!/usr/bin/env bash
# Installs this project's optional `gpu` extra (cupy, which Ray's NCCL collective needs)
# into a Python environment, on a node whose GPUs the NVIDIA driver lists; on any other
# node it only says so.  Every cloud config runs it on every worker (worker_setup_commands),
# so CPU workers skip it and GPU workers get exactly the pin of pyproject.toml's
# [project.optional-dependencies] gpu.
#
#   bash clusters/gpu-extra.sh PYTHON     # e.g. ~/comdml-venv/bin/python, or python in Ray's image
#
# It installs with uv where ~/.local/bin/uv exists (the pip set-up's venv has no pip),
# else with PYTHON -m pip (Ray's image).
set -euo pipefail
python=${1:?usage: bash clusters/gpu-extra.sh PYTHON}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# tomllib: Python 3.11+, the project's own version.
read -r -a pkgs < <("$python" -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["gpu"])' "$here/../pyproject.toml")
if ! "${NVIDIA_SMI:-nvidia-smi}" -L >/dev/null 2>&1; then  # NVIDIA_SMI: the probe (tests set it to `false`)
    echo "gpu extra (${pkgs[*]}): no GPU on this node, nothing to install"
    exit 0
fi
echo "gpu extra: installing ${pkgs[*]}"
if [ -x "$HOME/.local/bin/uv" ]; then
    "$HOME/.local/bin/uv" pip install --python "$python" "${pkgs[@]}"
else
    "$python" -m pip install --quiet --no-cache-dir "${pkgs[@]}"
fi
