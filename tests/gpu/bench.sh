#!/bin/sh
# GPU figures for docs/performance.md, in one prepared run on an NVIDIA Linux machine with a Vulkan
# driver and PyTorch (CUDA) + transformers + peft: `minordpo bench` through Vulkan (wgpu) at the
# SmolLM2-135M, Qwen2.5-0.5B and Llama-3.2-1B shapes, with and without the memory and speed knobs
# that exist (frozen precision f16 / f32 / q4, the fused LM head, attention as tensor-op spans (the
# wgpu default), as the WGSL kernels (`--attention-kernel fused`) and plain (`--attention-block
# 0`), the prompt computed once per pair against two rows per pair, per-layer recompute), the same
# training step in PyTorch + PEFT on CUDA (tests/baselines/torch_dpo_step.py) for the side-by-side
# ratio, the demo's tiny model and SmolLM2 on the CPU against wgpu, to decide when `auto` should
# prefer the CPU (and whether `attention_kernel: auto` should pick the WGSL kernels on GPUs), and
# greedy decoding (`bench --decode`) on both.
#
#   tests/gpu/bench.sh [OUT]     # OUT (default target/gpu-bench)
#
# OUT receives six files and no more, so that it can come back from a machine that returns a few
# files: results.jsonl (one JSON line per run, `{"label": …, "wall_s": …, "result": {…}}` or
# `{"label": …, "wall_s": …, "error": …}`), table.txt (a table of them, also printed),
# devices.txt (`devices --check` on the GPU), gpu.txt (nvidia-smi), build.txt (the commit that
# ran) and logs.tar.gz (every run's stdout and stderr; unpacked in target/gpu-bench-logs).
#
# The binary: the one tests/gpu/prepare.sh packed into .gpu/ if it is there (for GPU machines
# without Rust or a package registry: run prepare.sh on a Linux x86-64 machine with Rust, carry
# .gpu/ over), else `cargo build --release` here first, which is not counted in the budget (on 16
# cores a cold release build takes several minutes: on a machine lent for ten-minute commands,
# run it as its own command first). The Vulkan loader and libglvnd packed in .gpu/debs are
# unpacked under target/ (never into /) and used only if the system lacks the loader or a library
# the binary links to.
#
# The runs go in order of what they decide: the GPU's correctness, CPU against GPU (the `auto`
# device rule), minordpo against PyTorch on each shape, the WGSL attention against tensor ops
# (the `attention_kernel: auto` rule), then the memory and speed knobs. Each run is capped at
# RUN_LIMIT seconds (default 45) and none starts after BUDGET seconds (default 360), so the whole
# takes under ten minutes with `devices --check` (capped at 2); a skipped run is recorded as such. ONLY="label label …" runs just
# those runs (for a second, shorter call).
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT=${1:-target/gpu-bench}
RUN_LIMIT=${RUN_LIMIT:-45}
BUDGET=${BUDGET:-360}
ONLY=${ONLY:-}
PY=${PYTHON:-python3}
LOGS=target/gpu-bench-logs
rm -rf "$LOGS"
mkdir -p "$OUT" "$LOGS" target/gpu-bin || exit 1
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

if [ -f .gpu/minordpo.gz ]; then
    gzip -dc .gpu/minordpo.gz > target/gpu-bin/minordpo && chmod +x target/gpu-bin/minordpo || exit 1
    BIN=target/gpu-bin/minordpo
    cp .gpu/build.txt "$OUT/build.txt"
else
    cargo build --release --bin minordpo || exit 1
    BIN=target/release/minordpo
    echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown) (built here)" > "$OUT/build.txt"
fi
missing_libs() {
    ! { ldconfig -p 2> /dev/null || /sbin/ldconfig -p; } | grep -q 'libvulkan\.so\.1' ||
        ldd "$BIN" | grep -q 'not found'
}
if ls .gpu/debs/*.deb > /dev/null 2>&1 && missing_libs; then
    rm -rf target/gpu-root
    for deb in .gpu/debs/*.deb; do dpkg -x "$deb" target/gpu-root || echo "could not unpack $deb" >&2; done
    libs="$PWD/target/gpu-root/usr/lib/x86_64-linux-gnu:$PWD/target/gpu-root/lib/x86_64-linux-gnu"
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
        "$libs" "$PWD/$BIN" > target/gpu-bin/minordpo-with-libs
    chmod +x target/gpu-bin/minordpo-with-libs
    BIN=target/gpu-bin/minordpo-with-libs
    echo "libraries: the packed .debs ($libs)" >> "$OUT/build.txt"
fi
# NVIDIA's container images keep the Vulkan driver's manifest outside the loader's search path.
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$nvidia_icd" ] &&
    ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* > /dev/null 2>&1; then
    export VK_DRIVER_FILES="$nvidia_icd"
    echo "Vulkan driver: VK_DRIVER_FILES=$nvidia_icd" >> "$OUT/build.txt"
fi

# The adapters, then minordpo's vocabulary-wide kernels (fused log-probs, argmax) checked against
# the host on this GPU, whether Burn's own reduction gets such rows right on this driver, and one
# whole DPO step (default kernels, then the WGSL attention) against the CPU's tensor ops.
timeout 120 "$BIN" --device wgpu devices --check > "$OUT/devices.txt" 2>&1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"; } \
    > "$OUT/gpu.txt" 2>&1
START=$(date +%s)

# run LABEL COMMAND…: the command's last stdout line (its JSON) into results.jsonl.
run() {
    label=$1
    shift
    if [ -n "$ONLY" ]; then
        case " $ONLY " in *" $label "*) ;; *) return ;; esac
    fi
    if [ $(( $(date +%s) - START )) -ge "$BUDGET" ]; then
        echo "{\"label\":\"$label\",\"wall_s\":0,\"error\":\"skipped: the ${BUDGET}s budget was spent\"}" >> "$RESULTS"
        return
    fi
    t0=$(date +%s)
    timeout "$RUN_LIMIT" "$@" > "$LOGS/$label.out" 2> "$LOGS/$label.log"
    code=$?
    wall=$(( $(date +%s) - t0 ))
    line=$(tail -n 1 "$LOGS/$label.out")
    if [ -n "$line" ] && [ "${line#\{}" != "$line" ]; then
        echo "{\"label\":\"$label\",\"wall_s\":$wall,\"result\":$line}" >> "$RESULTS"
    else
        echo "{\"label\":\"$label\",\"wall_s\":$wall,\"error\":\"no result (exit $code, see $label.log)\"}" >> "$RESULTS"
    fi
    echo "$label: $wall s" >&2
}

bench() {
    label=$1
    shift
    run "$label" "$BIN" "$@" --steps 3 --warmup 2
}

# 1. CPU against GPU (the `auto` device rule): the demo's tiny model, training and its batched
# sampler (64 prompts at a time, as `demo` scores its problems), then SmolLM2 on the CPU; greedy
# decoding of SmolLM2 on both (`generate`'s rule). The table's "step ms" of a decode row is
# milliseconds per new token, the prompt's prefill included.
bench cpu-tiny --device cpu bench --preset tiny --batch-size 8 --seq-len 128
bench wgpu-tiny --device wgpu bench --preset tiny --batch-size 8 --seq-len 128
bench cpu-tiny-decode --device cpu bench --preset tiny --decode 16 --prompt-len 24 --batch-size 64
bench wgpu-tiny-decode --device wgpu bench --preset tiny --decode 16 --prompt-len 24 --batch-size 64
bench cpu-smollm2-decode --device cpu bench --preset smollm2-135m --decode 64 --prompt-len 41
bench wgpu-smollm2-decode --device wgpu bench --preset smollm2-135m --decode 64 --prompt-len 41
# 2. Each shape's default against PyTorch + PEFT on CUDA, and the WGSL attention against tensor ops.
bench wgpu-smollm2-default --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256
run torch-cuda-smollm2 "$PY" tests/baselines/torch_dpo_step.py 4 256 3 --preset smollm2-135m --device cuda --dtype bf16
bench wgpu-smollm2-wgsl-attention --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --attention-kernel fused
bench cpu-smollm2 --device cpu bench --preset smollm2-135m --batch-size 4 --seq-len 256
bench wgpu-qwen-default --device wgpu bench --preset qwen2.5-0.5b --batch-size 1 --seq-len 512
run torch-cuda-qwen "$PY" tests/baselines/torch_dpo_step.py 1 512 3 --preset qwen2.5-0.5b --device cuda --dtype bf16
bench wgpu-qwen-wgsl-attention --device wgpu bench --preset qwen2.5-0.5b --batch-size 1 --seq-len 512 --attention-kernel fused
bench wgpu-llama-default --device wgpu bench --preset llama-3.2-1b --batch-size 1 --seq-len 512
run torch-cuda-llama "$PY" tests/baselines/torch_dpo_step.py 1 512 3 --preset llama-3.2-1b --device cuda --dtype bf16
# 3. The knobs, one at a time against each shape's default; decoding the larger shapes.
bench wgpu-qwen-decode --device wgpu bench --preset qwen2.5-0.5b --decode 64 --prompt-len 41
bench wgpu-llama-decode --device wgpu bench --preset llama-3.2-1b --decode 64 --prompt-len 41
# f32 weights through CubeCL's matmul against the f16 ones our few-row kernels read in place.
bench wgpu-smollm2-decode-f32 --device wgpu bench --preset smollm2-135m --decode 64 --prompt-len 41 --frozen-precision f32
bench wgpu-llama-decode-f32 --device wgpu bench --preset llama-3.2-1b --decode 64 --prompt-len 41 --frozen-precision f32
bench wgpu-smollm2-decode-8-rows --device wgpu bench --preset smollm2-135m --decode 64 --prompt-len 41 --batch-size 8
bench wgpu-smollm2-two-rows --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --share-prompt false
bench wgpu-smollm2-recompute --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --gradient-checkpointing
bench wgpu-smollm2-f32 --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --frozen-precision f32
bench wgpu-smollm2-q4 --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --frozen-precision q4
bench wgpu-smollm2-plain-head --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --logprob-chunk 0
bench wgpu-smollm2-plain-attention --device wgpu bench --preset smollm2-135m --batch-size 4 --seq-len 256 --attention-block 0
bench wgpu-qwen-q4 --device wgpu bench --preset qwen2.5-0.5b --batch-size 1 --seq-len 512 --frozen-precision q4
bench wgpu-qwen-recompute --device wgpu bench --preset qwen2.5-0.5b --batch-size 1 --seq-len 512 --gradient-checkpointing
bench wgpu-qwen-plain-attention --device wgpu bench --preset qwen2.5-0.5b --batch-size 1 --seq-len 512 --attention-block 0
bench wgpu-llama-q4 --device wgpu bench --preset llama-3.2-1b --batch-size 1 --seq-len 512 --frozen-precision q4
bench wgpu-llama-q4-recompute --device wgpu bench --preset llama-3.2-1b --batch-size 1 --seq-len 512 --frozen-precision q4 --gradient-checkpointing

tar -czf "$OUT/logs.tar.gz" -C target gpu-bench-logs
cat "$OUT/build.txt" "$OUT/gpu.txt" "$OUT/devices.txt"
"$PY" - "$RESULTS" <<'PYEOF' | tee "$OUT/table.txt"
import json, sys
print(f"{'run':28} {'tokens/s':>10} {'step ms':>9} {'peak GB':>8} {'wall s':>6}  memory kind")
for line in open(sys.argv[1]):
    row = json.loads(line)
    r = row.get("result")
    if r is None:
        print(f"{row['label']:28} {row['error']}")
        continue
    peak = r.get("peak_memory_bytes") or 0
    print(f"{row['label']:28} {r['tokens_per_second']:10.1f} {r['step_ms_median']:9.0f} "
          f"{peak / 1e9:8.2f} {row['wall_s']:6}  {r.get('peak_memory_kind', '')}")
PYEOF
