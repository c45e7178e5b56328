#!/usr/bin/env bash
# Download, here (a machine with PyPI), the wheels the GPU machine's image lacks into .whl/ at the
# repository root, for the device tool to carry: `run(command="bash tools/gpu/run_on_device.sh",
# carry=[".whl"])`. The image already holds torch, timm, torchvision, safetensors, numpy, scipy,
# pillow, rich, matplotlib, tqdm, pytest, hypothesis, torchmetrics and packaging; it lacks kornia
# (with kornia-rs) and faiss. Pure-python or manylinux x86-64 wheels for CPython 3.12, no deps
# (each needed dependency is named here; one version of each). About 26 MB in all (the device
# tool carries at most 64 MiB with the working tree).
#
# faiss: faiss-cpu only. A faiss GPU build (faiss-gpu-cu12) needs the CUDA 12 runtime and cuBLAS
# wheels (about 0.5 GB), beyond what travels, and the image's CUDA is 13; the check then runs
# faiss-cpu on a subset and says so. FAISS_GPU_WHEEL=NAME==VERSION adds one anyway.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl .git/info
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
wheels=(kornia==0.9.0 kornia-rs==0.2.0 faiss-cpu==1.15.1)
[[ -n "${FAISS_GPU_WHEEL:-}" ]] && wheels+=("$FAISS_GPU_WHEEL")
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "${wheels[@]}"
du -sh .whl
