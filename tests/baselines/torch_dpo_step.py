# PyTorch + PEFT baseline for `minordpo bench` (docs/performance.md): the same training step
# (LoRA r=16 on every projection, MinorDPO loss, reference log-probs precomputed, AdamW), random
# weights with SmolLM2-135M's shape. Usage: .venv/bin/python tests/baselines/torch_dpo_step.py B T STEPS
import sys, time, statistics, resource, torch
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
torch.manual_seed(0)
B, T, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                  num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5,
                  rope_theta=100000.0, tie_word_embeddings=True)
model = LlamaForCausalLM(cfg)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]))
ids = torch.randint(0, cfg.vocab_size, (2 * B, T))
mask = torch.zeros(2 * B, T - 1); mask[:, T // 2 - 1:] = 1
def logps(m):
    logits = m(input_ids=ids).logits[:, :-1]
    lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (lp * mask).sum(-1)
with torch.no_grad(), model.disable_adapter():
    ref = logps(model)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
times = []
for step in range(steps + 1):
    t0 = time.perf_counter()
    pol = logps(model)
    dw, dl = (pol - ref)[:B], (pol - ref)[B:]
    loss = -torch.nn.functional.logsigmoid(0.1 * (dw - dl.clamp(min=0))).mean()
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); opt.zero_grad()
    if step > 0: times.append(time.perf_counter() - t0)
    print(f"step {step}: {1e3*(time.perf_counter()-t0):.0f} ms", file=sys.stderr)
med = statistics.median(times)
print({"torch_threads": torch.get_num_threads(), "tokens_per_second": 2 * B * T / med, "step_ms_median": 1e3 * med,
       "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
