#!/usr/bin/env bash
# The evaluator's speed on 200 GSM8K test problems (issue 20, benchmarks/eval.md): SmolLM2-135M-Instruct, greedy,
# 256 new tokens, 2 threads. BEFORE: the evaluator as it was (commit $BEFORE, default --batch-size 16, fp32 on this
# CPU); AFTER: this tree at each batch size in $BATCHES (dtype auto: bf16 where the CPU computes it natively).
# Run it with the machine to itself; it prints the CPU, the load and each arm's summary. Resumable per arm.
set -euo pipefail
BEFORE=${BEFORE:-1f8a8a2}
BATCHES=${BATCHES:-"16 32 64"}
OUT=${OUT:-/tmp/eval_speed}
PY=${PY:-$PWD/.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
lscpu | grep -E '^Model name|^CPU\(s\)'; lscpu | grep -o 'amx_bf16\|avx512_bf16' | sort -u || true; date -u; uptime
arm() {  # name, directory, extra args
  local name=$1 dir=$2; shift 2
  echo "== $name ($(uptime | sed 's/.*load average/load average/'))"
  (cd "$dir" && /usr/bin/time -f "$name wall %e s, peak RSS %M KB" "$PY" -m trl_gsm8k.evaluate \
      --model smollm2-135m-instruct --split test --limit 200 --max-new-tokens 256 --threads 2 \
      --output "$OUT/$name/eval.json" "$@" 2>&1 | grep -v '^GSM8K:' | tail -25)
}
if [ ! -d "$OUT/before_tree" ]; then git worktree add --detach "$OUT/before_tree" "$BEFORE" >/dev/null; fi
arm before "$OUT/before_tree"
for b in $BATCHES; do arm "after_b$b" "$PWD" --batch-size "$b"; done
git worktree remove --force "$OUT/before_tree" || true
echo "done $(date -u) ($(uptime | sed 's/.*load average/load average/'))"
