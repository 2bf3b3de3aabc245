#!/usr/bin/env bash
# The CPU baseline of benchmarks/eval.md: SmolLM2-135M-Instruct (offline GGUF, converted once), greedy, GSM8K test.
# Rerunning the same command resumes from OUT/eval.jsonl; LIMIT=50 gives a quick estimate first.
set -euo pipefail
OUT=${OUT:-benchmarks/out/smollm2-135m}
nice -n 10 python -m trl_gsm8k.evaluate --model smollm2-135m-instruct --split test ${LIMIT:+--limit "$LIMIT"} \
    --max-new-tokens 256 --batch-size 32 --threads 1 --output "$OUT/eval.json"
