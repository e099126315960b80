# PyTorch + PEFT baseline for `minordpo bench` (docs/performance.md): the same training step
# (LoRA r=16 on every projection, MinorDPO loss, reference log-probs precomputed, AdamW) on random
# weights with one of `minordpo bench`'s preset shapes (configs/bench/NAME.json, the models' own
# config.json). Prints one dict: tokens/s, median step, peak memory (host RSS on the CPU, CUDA's
# peak allocation on a GPU).
#
#   .venv/bin/python tests/baselines/torch_dpo_step.py B T STEPS                 # SmolLM2, CPU, f32
#   python tests/baselines/torch_dpo_step.py 1 512 3 --preset llama-3.2-1b --device cuda --dtype bf16
import argparse, json, os, resource, statistics, sys, time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

parser = argparse.ArgumentParser()
parser.add_argument("batch_size", type=int)
parser.add_argument("seq_len", type=int)
parser.add_argument("steps", type=int)
parser.add_argument("--preset", default="smollm2-135m")
parser.add_argument("--device", default="cpu")
parser.add_argument("--dtype", default="f32", choices=["f32", "bf16"],
                    help="the frozen weights' dtype (LoRA stays f32, as PEFT keeps it)")
args = parser.parse_args()
B, T, steps, device = args.batch_size, args.seq_len, args.steps, torch.device(args.device)

torch.manual_seed(0)
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
with open(os.path.join(root, "configs", "bench", f"{args.preset}.json")) as f:
    raw = json.load(f)
# The presets name their architecture (`LlamaForCausalLM`, …), as minordpo reads them.
MODEL_TYPES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
               "Gemma3ForCausalLM": "gemma3_text"}
cfg = AutoConfig.for_model(MODEL_TYPES[raw["architectures"][0]], **raw)
dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
model = AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype).to(device)
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
ids = torch.randint(0, cfg.vocab_size, (2 * B, T), device=device)
mask = torch.zeros(2 * B, T - 1, device=device)
mask[:, T // 2 - 1:] = 1


def logps(m):
    logits = m(input_ids=ids).logits[:, :-1]
    lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (lp * mask).sum(-1)


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


with torch.no_grad(), model.disable_adapter():
    ref = logps(model)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
times = []
for step in range(steps + 1):
    sync()
    t0 = time.perf_counter()
    pol = logps(model)
    dw, dl = (pol - ref)[:B], (pol - ref)[B:]
    loss = -torch.nn.functional.logsigmoid(0.1 * (dw - dl.clamp(min=0))).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    sync()
    if step > 0:
        times.append(time.perf_counter() - t0)
    print(f"step {step}: {1e3 * (time.perf_counter() - t0):.0f} ms", file=sys.stderr)
med = statistics.median(times)
peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps({"framework": "torch+peft", "preset": args.preset, "device": str(device),
                  "dtype": args.dtype, "batch_size": B, "seq_len": T,
                  "torch_threads": torch.get_num_threads(), "tokens_per_second": 2 * B * T / med,
                  "step_ms_median": 1e3 * med,
                  "peak_memory_bytes": peak,
                  "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "host_rss"}))
