#!/usr/bin/env bash
# The GPU check on the device machine, from the repository root, in one command:
#
#   bash tools/gpu/run_on_device.sh [python -m geo_bench.gpu_check options, e.g. --only tests]
#
# Through the device tool (wheels prepared here first with tools/gpu/fetch_wheels.sh):
#   run(command="bash tools/gpu/run_on_device.sh", carry=[".whl"], timeout_s=600)
# With the authors' checkouts in .upstream/ (the side-by-side training steps, geo-bench README):
#   run(command="bash tools/gpu/run_on_device.sh --only upstream --upstream-root .upstream",
#       carry=[".whl", ".upstream"], timeout_s=600)
# The report (gpu_check.json, gpu_check.md, gpu_check.log) goes to $OUT (the tool's folder that
# comes back), else to out/gpu-check. The image's python3 already holds torch and most
# dependencies; the wheels in .whl/ (kornia, kornia-rs, faiss-cpu) install into /tmp/geo-site, the
# four packages run from their src/ folders of this working tree, and tools/gpu/dist_info.py gives
# them the metadata an install would (versions, the geo_retrieval.recipes entry point that brings
# geo-synthesis' recipes). Exit status: the check's (0 all passed, 1 a check failed), 3 setup failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-out/gpu-check}"
site=/tmp/geo-site
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl || exit 3
else
    echo "run_on_device: no wheels in .whl/ (run tools/gpu/fetch_wheels.sh here and carry .whl)" >&2
fi
python3 tools/gpu/dist_info.py "$site" || exit 3
src="$PWD/packages/geo-transforms/src:$PWD/packages/geo-retrieval/src"
src="$src:$PWD/packages/geo-synthesis/src:$PWD/packages/geo-bench/src"
export PYTHONPATH="$site:$src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 -m geo_bench.gpu_check --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
