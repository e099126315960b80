"""The DPO training run of TRL + PEFT against `minordpo train`, side by side on the same model, data
and settings (docs/performance.md): LoRA r = 16 (α 32) on every projection, sigmoid DPO, β 0.1,
batch 4, reference log-probs precomputed, 16 steps, no evaluation, no checkpoints.

    python tests/baselines/trl_dpo_side_by_side.py data pairs.jsonl            # 64 chat pairs
    python tests/baselines/trl_dpo_side_by_side.py trl MODEL_DIR pairs.jsonl [--threads 2]
    python tests/baselines/trl_dpo_side_by_side.py minordpo MODEL_DIR pairs.jsonl [--bin PATH]
        [--flags "--share-prompt false --max-tokens-per-batch 2048"]

`--gradient-checkpointing` turns activation checkpointing on for either side (TRL's
`gradient_checkpointing=True`, minordpo's per-layer recompute); `--flags` adds minordpo options.

`data` writes 64 conversational pairs (a system message and a ~100-word question, ~130 tokens;
answers of ~90 words, ~100 tokens) from a seeded word list, so both sides read identical rows.
`trl` and `minordpo` each print one JSON line: the wall time of the training call (the reference
precompute and the 16 steps; minordpo's also counts loading the model, TRL's does not), seconds
per step (that time over the steps) and the peak resident memory of the process (minordpo: of
the child process). Alternate the two in one sitting.
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

STEPS, BATCH, RANK = 16, 4, 16
WORDS = (
    "model data paint robot river light garden music number answer question simple careful "
    "quiet bright story city mountain window table letter morning evening train field "
    "teacher student lesson colour shape line circle square water stone forest bird "
    "small large early late happy curious patient gentle clever strong"
).split()


def sentence(rng, words):
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def paragraph(rng, words):
    out = []
    while words > 0:
        n = min(words, rng.randint(8, 14))
        out.append(sentence(rng, n))
        words -= n
    return " ".join(out)


def make_data(path):
    rng = random.Random(0)
    with open(path, "w") as f:
        for _ in range(64):
            row = {
                "prompt": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": paragraph(rng, 95) + " What do you think?"},
                ],
                "chosen": [{"role": "assistant", "content": paragraph(rng, 90)}],
                "rejected": [{"role": "assistant", "content": paragraph(rng, 90)}],
            }
            f.write(json.dumps(row) + "\n")


def peak_rss(who):
    # Linux reports kilobytes, macOS bytes.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(who).ru_maxrss * scale


def run_trl(model_dir, data, threads, checkpointing):
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft = LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0, target_modules=targets)
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            output_dir=out, per_device_train_batch_size=BATCH, max_steps=STEPS,
            learning_rate=5e-6, beta=0.1, loss_type="sigmoid", precompute_ref_log_probs=True,
            logging_steps=STEPS, save_strategy="no", report_to=[], use_cpu=True,
            dataloader_num_workers=0, max_length=1024, gradient_checkpointing=checkpointing,
        )
        dataset = load_dataset("json", data_files=data, split="train")
        trainer = DPOTrainer(model=model, args=config, train_dataset=dataset,
                             processing_class=tokenizer, peft_config=peft)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return {"side": "trl+peft", "torch_threads": threads, "gradient_checkpointing": checkpointing,
            "seconds": seconds,
            "seconds_per_step": seconds / STEPS, "peak_memory_bytes": peak_rss(resource.RUSAGE_SELF)}


def run_minordpo(model_dir, data, binary, checkpointing, flags):
    with tempfile.TemporaryDirectory() as out:
        command = [binary, "--device", "cpu", "train", "--model", model_dir, "--data", data,
                   "--output", out, "--loss", "sigmoid", "--beta", "0.1", "--batch-size", str(BATCH),
                   "--max-steps", str(STEPS), "--lora-r", str(RANK), "--lora-alpha", str(2 * RANK),
                   "--lora-dropout", "0", "--learning-rate", "5e-6", "--eval-split", "0",
                   "--logging-steps", str(STEPS), "--save-steps", "0", "--max-length", "1024",
                   "--gradient-checkpointing", str(checkpointing).lower()] + flags.split()
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
    return {"side": "minordpo", "gradient_checkpointing": checkpointing, "flags": flags,
            "seconds": seconds, "seconds_per_step": seconds / STEPS,
            "peak_memory_bytes": peak_rss(resource.RUSAGE_CHILDREN)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["data", "trl", "minordpo"])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--bin", default="target/release/minordpo")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--flags", default="")
    args = parser.parse_args()
    if args.what == "data":
        make_data(args.paths[0])
        return
    model_dir, data = args.paths
    checkpointing = args.gradient_checkpointing
    result = (run_trl(model_dir, data, args.threads, checkpointing) if args.what == "trl"
              else run_minordpo(model_dir, data, args.bin, checkpointing, args.flags))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
