#!/usr/bin/env bash
# `chunkwise measure --local-engine` on an NVIDIA GPU machine (no network), with a CUDA llama-server
# built from the trimmed llama.cpp of scripts/gpu_pack.py and a synthetic model made on the spot.
#
# Here (network):  .venv/bin/python scripts/gpu_pack.py        -> .gpu/llama.cpp-src.tar.gz (~6 MB)
# There:           bash scripts/gpu_measure.sh                  (carry .gpu; results under $OUT)
#
# Steps, each skipped when already done (a second call on the same warm machine resumes the build):
# 1. CUDA build of llama-server (sm_90, FlashAttention kernels on: without them the attention
#    compute buffer grows with the context and hides the KV slope) into build/gpu-llama/.
# 2. Synthetic llama GGUF (chunkwise.harness.llama_server.synthetic): 32 layers x 8 KV heads x head dim 128 =
#    128 KiB of f16 KV per token, like Llama 3.1 8B (2 GiB at 16k), 0.45 GB of random weights.
# 3. chunkwise measure --local-engine with NVML: one llama-server start per context, -ngl 999.
# Needs: nvcc, cmake, ninja, python3 (3.10+) with pynvml; chunkwise's own dependencies are not
# needed (measure falls back to its stdlib-only path when they are missing).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
WORK=${WORK:-$PWD/build/gpu-llama}
CONTEXTS=${CONTEXTS:-2048,4096,8192,16384}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT" "$WORK"
log() { echo "[gpu_measure $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/gpu_measure.log"; }

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
nvcc --version | tail -2 | tee -a "$OUT/gpu_measure.log"

BIN="$WORK/build/bin/llama-server"
if [ ! -x "$BIN" ]; then
  [ -f .gpu/llama.cpp-src.tar.gz ] || { log "no .gpu/llama.cpp-src.tar.gz: run scripts/gpu_pack.py and carry .gpu"; exit 2; }
  [ -d "$WORK/llama.cpp" ] || tar xzf .gpu/llama.cpp-src.tar.gz -C "$WORK"
  t0=$(date +%s)
  cmake -S "$WORK/llama.cpp" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF \
    -DBUILD_SHARED_LIBS=OFF > "$OUT/cmake-configure.log" 2>&1 || { tail -30 "$OUT/cmake-configure.log"; exit 1; }
  cmake --build "$WORK/build" --target llama-server -j "$JOBS" > "$OUT/cmake-build.log" 2>&1 \
    || { tail -30 "$OUT/cmake-build.log"; exit 1; }
  log "built llama-server (CUDA, sm_90) in $(( $(date +%s) - t0 )) s"
fi
"$BIN" --version 2>&1 | tail -3 | tee -a "$OUT/gpu_measure.log"

# chunkwise looks for the binary in its cache layout; a private cache dir keeps the user's alone.
export XDG_CACHE_HOME="$WORK/cache"
CACHED=$(PYTHONPATH=$PWD python3 -c 'from chunkwise.harness.llama_server.paths import engine_paths; print(engine_paths().server)')
mkdir -p "$(dirname "$CACHED")" && cp "$BIN" "$CACHED"

MODEL="$WORK/synthetic-llama-128k.gguf"
[ -f "$MODEL" ] || PYTHONPATH=$PWD python3 -m chunkwise.harness.llama_server.synthetic "$MODEL" | tee -a "$OUT/gpu_measure.log"

log "measure: contexts $CONTEXTS"
ARGS=(--local-engine --model "$MODEL" --contexts "$CONTEXTS" --prompt-tokens 256 --num-predict 8
      --engine-args "-ngl 999" --output-dir "$OUT")
if PYTHONPATH=$PWD python3 -c 'import chunkwise.cli, chunkwise.commands.measure, pydantic_settings' 2>/dev/null; then
  PYTHONPATH=$PWD python3 -m chunkwise measure "${ARGS[@]}" | tee -a "$OUT/gpu_measure.log" || true
else
  log "chunkwise's dependencies are missing here: calling chunkwise.measure.engine directly"
  PYTHONPATH=$PWD python3 - "$MODEL" "$CONTEXTS" "$OUT" <<'PY' | tee -a "$OUT/gpu_measure.log"
import sys
from pathlib import Path
from chunkwise.measure.engine import run_engine_measurement
model, contexts, out = sys.argv[1], [int(c) for c in sys.argv[2].split(",")], Path(sys.argv[3])
report = run_engine_measurement(contexts, out / "measure-synthetic", model=Path(model), prompt_tokens=256,
                                num_predict=8, extra=["-ngl", "999"])
print(report.markdown)
PY
fi
nvidia-smi --query-gpu=memory.used --format=csv | tee -a "$OUT/gpu_measure.log"
log "done; results under $OUT"
