"""Greedy decoding speed of transformers on the CPU, the baseline for `minordpo generate`.

    python tests/baselines/hf_generate.py MODEL_DIR [--new-tokens 64] [--dtype bf16|f32] [--threads N]

Encodes the same chat prompt `minordpo generate --chat` encodes (the model's chat template with an
assistant turn opened), runs one untimed warm-up generation, then times greedy decoding of
`--new-tokens` tokens (EOS ignored, so every run decodes the same count) and prints one JSON line:
prompt and new token counts, seconds, tokens/s of the whole call (prefill included), and the ids.
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = "Write a short story about a robot learning to paint."


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).eval()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt"
    )
    if not isinstance(ids, torch.Tensor):
        ids = ids["input_ids"]
    settings = dict(do_sample=False, max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens, pad_token_id=tokenizer.eos_token_id)
    with torch.inference_mode():
        model.generate(ids, **settings)
        started = time.perf_counter()
        out = model.generate(ids, **settings)
        seconds = time.perf_counter() - started
    new = out[0, ids.shape[1]:].tolist()
    print(json.dumps({
        "dtype": args.dtype, "threads": torch.get_num_threads(),
        "prompt_tokens": ids.shape[1], "new_tokens": len(new), "seconds": round(seconds, 3),
        "tokens_per_second": round(len(new) / seconds, 2), "ids": new,
    }))


if __name__ == "__main__":
    main()
