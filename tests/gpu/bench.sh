#!/bin/sh
# GPU figures for docs/performance.md, in one prepared run on an NVIDIA Linux machine with a Vulkan
# driver and PyTorch (CUDA) + transformers + peft: `minordpo bench` through Vulkan (wgpu) at the
# SmolLM2-135M, Qwen2.5-0.5B and Llama-3.2-1B shapes, with and without the memory and speed knobs
# that exist (frozen precision f16 / f32 / q4, the fused LM head, attention as tensor-op spans (the
# wgpu default), as the WGSL kernels (`--attention-kernel fused`) and plain (`--attention-block
# 0`), the prompt computed once per pair against two rows per pair, per-layer recompute), the same
# training step in PyTorch + PEFT on CUDA (tests/baselines/torch_dpo_step.py) for the side-by-side
# ratio, and the demo's tiny model and SmolLM2 on the CPU against wgpu, to decide when `auto` should
# prefer the CPU (and whether `attention_kernel: auto` should pick the WGSL kernels on GPUs).
#
#   tests/gpu/bench.sh [OUT]     # OUT (default target/gpu-bench): results.jsonl, one log per run
#
# Every run is one JSON line in OUT/results.jsonl, `{"label": …, "result": {…}}` or
# `{"label": …, "error": …}`; a table of them is printed at the end. Each run is capped at
# RUN_LIMIT seconds (default 45) and no run starts after BUDGET seconds (default 480), so the runs
# take under ten minutes. The build comes first and is not counted (on 16 cores a cold release build
# takes several minutes: on a machine lent for ten-minute commands, run `cargo build --release`
# as its own command first).
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT=${1:-target/gpu-bench}
RUN_LIMIT=${RUN_LIMIT:-45}
BUDGET=${BUDGET:-480}
PY=${PYTHON:-python3}
mkdir -p "$OUT" || exit 1
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

cargo build --release --bin minordpo || exit 1
BIN=target/release/minordpo
# The adapters, then minordpo's vocabulary-wide kernels (fused log-probs, argmax) checked against
# the host on this GPU, and whether Burn's own reduction gets such rows right on this driver.
"$BIN" --device wgpu devices --check > "$OUT/devices.txt" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
START=$(date +%s)

# run LABEL COMMAND…: the command's last stdout line (its JSON) into results.jsonl.
run() {
    label=$1
    shift
    if [ $(( $(date +%s) - START )) -ge "$BUDGET" ]; then
        echo "{\"label\":\"$label\",\"error\":\"skipped: the ${BUDGET}s budget was spent\"}" >> "$RESULTS"
        return
    fi
    t0=$(date +%s)
    timeout "$RUN_LIMIT" "$@" > "$OUT/$label.out" 2> "$OUT/$label.log"
    code=$?
    line=$(tail -n 1 "$OUT/$label.out")
    if [ -n "$line" ] && [ "${line#\{}" != "$line" ]; then
        echo "{\"label\":\"$label\",\"result\":$line}" >> "$RESULTS"
    else
        echo "{\"label\":\"$label\",\"error\":\"no result (exit $code, see $label.log)\"}" >> "$RESULTS"
    fi
    echo "$label: $(( $(date +%s) - t0 )) s" >&2
}

bench() {
    label=$1
    shift
    run "$label" "$BIN" "$@" --steps 3 --warmup 2
}

# When the CPU wins: the demo's tiny model on both (quick, so first), SmolLM2 on the CPU last.
bench cpu-tiny --device cpu bench --preset tiny --batch-size 8 --seq-len 128
bench wgpu-tiny --device wgpu bench --preset tiny --batch-size 8 --seq-len 128
# Each shape with its pairs per step and tokens per sequence, and its variants.
bench wgpu-smollm2-default --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256
bench wgpu-smollm2-two-rows --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --share-prompt false
bench wgpu-smollm2-recompute --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --gradient-checkpointing
bench wgpu-smollm2-f32 --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --frozen-precision f32
bench wgpu-smollm2-q4 --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --frozen-precision q4
bench wgpu-smollm2-plain-head --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --logprob-chunk 0
bench wgpu-smollm2-plain-attention --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --attention-block 0
bench wgpu-smollm2-wgsl-attention --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --attention-kernel fused
run torch-cuda-smollm2 "$PY" tests/baselines/torch_dpo_step.py 4 256 3 --preset smollm2-135m --device cuda --dtype bf16
bench wgpu-qwen-default --device wgpu bench --preset qwen2.5-0.5b --batch-size 1 --seq-len 512
bench wgpu-qwen-q4 --device wgpu bench --preset qwen2.5-0.5b --batch-size 1 --seq-len 512 --frozen-precision q4
bench wgpu-qwen-plain-attention --device wgpu bench --preset qwen2.5-0.5b --batch-size 1 --seq-len 512 --attention-block 0
bench wgpu-qwen-wgsl-attention --device wgpu bench --preset qwen2.5-0.5b --batch-size 1 --seq-len 512 --attention-kernel fused
bench wgpu-qwen-recompute --device wgpu bench --preset qwen2.5-0.5b --batch-size 1 --seq-len 512 --gradient-checkpointing
run torch-cuda-qwen "$PY" tests/baselines/torch_dpo_step.py 1 512 3 --preset qwen2.5-0.5b --device cuda --dtype bf16
bench wgpu-llama-default --device wgpu bench --preset llama-3.2-1b --batch-size 1 --seq-len 512
bench wgpu-llama-q4 --device wgpu bench --preset llama-3.2-1b --batch-size 1 --seq-len 512 --frozen-precision q4
bench wgpu-llama-q4-recompute --device wgpu bench --preset llama-3.2-1b --batch-size 1 --seq-len 512 --frozen-precision q4 --gradient-checkpointing
run torch-cuda-llama "$PY" tests/baselines/torch_dpo_step.py 1 512 3 --preset llama-3.2-1b --device cuda --dtype bf16
bench cpu-smollm2 --device cpu bench --preset smollm2-135m --batch-size 4 --seq-len 256

cat "$OUT/devices.txt"
"$PY" - "$RESULTS" <<'PYEOF'
import json, sys
print(f"{'run':28} {'tokens/s':>10} {'step ms':>9} {'peak GB':>8}  memory kind")
for line in open(sys.argv[1]):
    row = json.loads(line)
    r = row.get("result")
    if r is None:
        print(f"{row['label']:28} {row['error']}")
        continue
    peak = r.get("peak_memory_bytes") or 0
    print(f"{row['label']:28} {r['tokens_per_second']:10.1f} {r['step_ms_median']:9.0f} "
          f"{peak / 1e9:8.2f}  {r.get('peak_memory_kind', '')}")
PYEOF
