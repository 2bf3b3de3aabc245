"""Will a recipe fit? Peak GPU memory per device and host (CPU) memory per machine, from the model's config alone.

    python -m trl_gsm8k.memory --config recipes/<recipe>.yaml --gpu-gb 8 [--cpu-gb 32] [--num-processes N]
        [--accelerate-config accelerate_configs/zero2_offload.yaml] [--model-config DIR] [--prompt-tokens 200]
        [--reduce-bucket-size 5e8] [--any_recipe_field value ...]

Prints each term in GB (2^30 bytes, as torch and nvidia-smi count) on the GPU and in host memory, and a one-line
verdict that judges both (--cpu-gb defaults to this machine's total RAM), names the one that does not fit and the
single change that saves most. `estimate()` is the pure function behind it. The GPU peak is modelled as

    weights + LoRA + optimizer (GPU part) + DeepSpeed buffers
    + max(generation: KV cache, training: gradients + activations + log-prob tiles)
    + overhead (CUDA context + allocator fragmentation)

Phases follow TRL 1.16's GRPOTrainer: the whole per-device generation batch is generated in one `generate` call, then
log-probs are computed per micro-batch through TRL's fused LM head, which never materialises the full
(tokens x vocabulary) logits: it projects 4096-token x 32768-vocabulary tiles.

Host memory per process: the runtime (Python, torch, CUDA's host side), one host copy of the weights (read from the
checkpoint before they move to the GPU; serialised again when the model is saved) and, with DeepSpeed's optimizer
offload, the pinned buffers of deepspeed/runtime/zero/stage_1_and_2.py (fp32 master partition, fp32 gradient
partition, a 16-bit staging copy of the partition, a 16-bit per-parameter accumulation buffer when
gradient_accumulation_steps > 1) plus DeepSpeedCPUAdam's fp32 m and v. Processes on one machine share its RAM.
Measured against real steps: benchmarks/memory.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

GIB = 2**30
CUDA_CONTEXT_GIB = 0.5  # CUDA context + cuBLAS workspace; not in max_memory_allocated, in nvidia-smi
FRAGMENTATION = 0.10  # caching-allocator slack over what is allocated (reserved vs allocated)
# GSM8K train + the default system prompt, Qwen tokenizer with chat markup: median 118, p95 163, p99 190, max 274
# tokens. TRL left-pads a generation batch to its longest prompt, so 200 covers nearly every batch.
DEFAULT_PROMPT_TOKENS = 200
# Host memory of one training process before any weights: Python with torch, transformers, TRL, DeepSpeed, datasets
# and this package imported, measured at 0.46 GB RSS (benchmarks/memory.md). On a GPU machine CUDA's host side (driver,
# cuBLAS/cuDNN images) adds 1.1-1.7 GB in public reports (pytorch/pytorch#106511, #113326): 1.5 assumed, unmeasured.
HOST_RUNTIME_GIB = 0.5
CUDA_HOST_GIB = 1.5
DS_REDUCE_BUCKET_SIZE = 5e8  # DeepSpeed's default when the JSON does not set zero_optimization.reduce_bucket_size
DS3_PREFETCH_BUCKET_SIZE = 5e7
TRL_TOKEN_TILE, TRL_VOCAB_TILE = 4096, 32768  # trl.kernels.chunked_logprob / trl.trainer.utils (trl 1.16)
NF4_BLOCK = 64  # bitsandbytes 4-bit: one absmax per 64 weights (fp32, or 8-bit + fp32 per 256 blocks when nested)
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BUNDLED_CONFIGS = {
    "deepseek-ai/deepseek-r1-distill-qwen-1.5b": "deepseek-ai--DeepSeek-R1-Distill-Qwen-1.5B.json",
    "qwen/qwen2.5-1.5b-instruct": "Qwen--Qwen2.5-1.5B-Instruct.json",
    "smollm2-135m-instruct": "smollm2-135m-instruct.json",
}


class PlannerError(ValueError):
    """Input the planner cannot use; the message says how to fix it."""


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only transformer that memory depends on."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any, where: str = "the model config") -> ModelShape:
        """From a config.json dict or a transformers config.

        >>> ModelShape.from_config({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        ...                         "vocab_size": 100}).head_dim
        16
        """
        d = dict(config.to_dict() if hasattr(config, "to_dict") else config)
        if isinstance(d.get("text_config"), Mapping):
            d = {"tie_word_embeddings": d.get("tie_word_embeddings"), **d["text_config"]}
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if not d.get(k)]
        if missing:
            raise PlannerError(f"{where} has no {'/'.join(missing)}: the planner understands decoder-only "
                               "transformer configs (Llama, Qwen2, Mistral, ...); give one with --model-config DIR.")
        if d.get("num_local_experts") or d.get("num_experts"):
            raise PlannerError(f"{where} is a mixture-of-experts model, which the planner does not model.")
        hidden, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
        return cls(
            hidden=hidden, layers=int(d["num_hidden_layers"]), heads=heads,
            kv_heads=int(d.get("num_key_value_heads") or heads), head_dim=int(d.get("head_dim") or hidden // heads),
            intermediate=int(d.get("intermediate_size") or 4 * hidden), vocab=int(d["vocab_size"]),
            tied=bool(d.get("tie_word_embeddings", True)),  # transformers' default is True
            qkv_bias=d.get("model_type") == "qwen2" or bool(d.get("attention_bias")),
        )

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def counts(self) -> dict[str, int]:
        """Parameters by kind: linear layers of the decoder, embeddings, lm_head (0 when tied), norms and biases."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        linear = self.layers * sum(i * o for i, o in self.module_dims().values())
        small = self.layers * (2 * self.hidden + (q + 2 * kv if self.qkv_bias else 0)) + self.hidden
        embed = self.vocab * self.hidden
        return {"linear": linear, "embed": embed, "lm_head": 0 if self.tied else embed, "small": small}

    @property
    def params(self) -> int:
        return sum(self.counts().values())

    def lora_params(self, r: int, targets: Sequence[str]) -> int:
        dims = self.module_dims()
        unknown = [t for t in targets if t not in dims]
        if unknown:
            raise PlannerError(f"LoRA target modules {unknown} are not modelled: use names among {sorted(dims)} "
                               "or 'all-linear'.")
        return self.layers * sum(r * (dims[t][0] + dims[t][1]) for t in targets)


@dataclass(frozen=True)
class RunSettings:
    """What a recipe decides about memory (one device's view)."""

    dtype_bytes: float = 2.0  # weights as loaded (the recipe's `dtype`)
    mixed_precision: bool = True  # bf16 or fp16 training
    use_peft: bool = False
    lora_r: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    lora_dropout: bool = True
    load_in_4bit: bool = False
    nested_quant: bool = False
    load_in_8bit: bool = False
    micro_batch: int = 1  # per_device_train_batch_size: sequences per forward/backward
    generation_batch: int = 8  # sequences generated at once per device: micro_batch x steps_per_generation
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    completion_tokens: int = 256
    activation_checkpointing: bool = True
    gradient_accumulation: int = 8  # > 1: earlier micro-batches' gradients stay while the next one runs
    reference_model: bool = False  # beta > 0 with a full fine-tune loads a frozen copy
    eager_attention: bool = False  # attention matrices stored (SDPA/flash keep O(sequence) memory)


@dataclass(frozen=True)
class ZeroSetup:
    """The launcher's DeepSpeed settings; stage 0 means no DeepSpeed."""

    stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    reduce_bucket_size: float = DS_REDUCE_BUCKET_SIZE
    contiguous_gradients: bool = True
    overlap_comm: bool = False
    gather_for_generation: bool = True  # TRL's ds3_gather_for_generation

    def describe(self) -> str:
        if self.stage == 0:
            return "no DeepSpeed"
        where = [w for w, on in (("optimizer", self.offload_optimizer), ("parameters", self.offload_params)) if on]
        return f"DeepSpeed ZeRO-{self.stage}" + (f", {' and '.join(where)} offloaded to CPU" if where else "")


TERMS = ("weights", "lora", "gradients", "optimizer", "zero_buffers", "activations", "logits", "kv_cache", "overhead")
PHASE = {"gradients": "training", "activations": "training", "logits": "training", "kv_cache": "generation"}


def _training(gradients: float, activations: float, logits: float, accumulation: int) -> float:
    # Without accumulation the gradients fill in during backward as the activations are freed (the trainer sets
    # them to None after each step); with it, earlier micro-batches' gradients are all there in the next backward.
    return (gradients + activations if accumulation > 1 else max(gradients, activations)) + logits


@dataclass(frozen=True)
class MemoryEstimate:
    """GB (2^30 bytes) on each GPU per term; `cpu` holds the host memory of one process by term (the same names;
    `overhead` is the runtime); `processes_per_machine` of them share `cpu_gb`."""

    weights: float
    lora: float
    gradients: float
    optimizer: float
    zero_buffers: float
    activations: float
    logits: float
    kv_cache: float
    overhead: float
    gpu_gb: float
    cpu: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    gradient_accumulation: int = 8
    cpu_gb: float = math.inf
    processes_per_machine: int = 1

    @property
    def training(self) -> float:
        return _training(self.gradients, self.activations, self.logits, self.gradient_accumulation)

    @property
    def host_per_process(self) -> float:
        return sum(self.cpu.values())

    @property
    def host_peak(self) -> float:
        """Host memory of all this run's processes on one machine."""
        return self.processes_per_machine * self.host_per_process

    @property
    def fits_gpu(self) -> bool:
        return self.peak <= self.gpu_gb

    @property
    def fits_host(self) -> bool:
        return self.host_peak <= self.cpu_gb

    @property
    def peak(self) -> float:
        static = self.weights + self.lora + self.optimizer + self.zero_buffers
        return static + max(self.kv_cache, self.training) + self.overhead

    @property
    def fits(self) -> bool:
        return self.fits_gpu and self.fits_host


def estimate(shape: ModelShape, run: RunSettings, zero: ZeroSetup = ZeroSetup(), gpu_gb: float = 8.0,
             num_processes: int = 1, device: str = "cuda", cpu_gb: float = math.inf,
             processes_per_machine: int | None = None) -> MemoryEstimate:
    """Peak memory per device of one GRPO run, and its host memory. `device="cpu"` drops the CUDA terms (context,
    fragmentation, the host copy of weights that stay on the CPU) and models TRL's CPU log-prob path, for comparison
    with a measured CPU step. `processes_per_machine` (default: all `num_processes`) share `cpu_gb`.

    >>> s = ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=1000, tied=True)
    >>> e = estimate(s, RunSettings(), gpu_gb=1.0)
    >>> e.fits, round(e.weights * GIB / 2) == s.params
    (True, True)
    """
    n = num_processes
    c = shape.counts()
    ds, mixed = zero.stage > 0, run.mixed_precision
    act_bytes = 2 if (mixed or run.load_in_4bit or run.load_in_8bit) else run.dtype_bytes
    weight_bytes = 2 if (ds and mixed) else run.dtype_bytes  # DeepSpeed casts the module to bf16/fp16
    notes: dict[str, str] = {}
    cpu: dict[str, float] = {}

    # weights: quantized linear layers keep embeddings, lm_head, norms and biases in 16 bits
    if run.load_in_4bit:
        per_weight = 0.5 + ((1 + 4 / 256) if run.nested_quant else 4) / NF4_BLOCK
        base = c["linear"] * per_weight + (c["embed"] + c["lm_head"] + c["small"]) * 2
        notes["weights"] = f"NF4 {per_weight:.3f} B/weight incl. constants, embeddings/lm_head bf16"
    elif run.load_in_8bit:
        base = c["linear"] * 1 + (c["embed"] + c["lm_head"] + c["small"]) * 2
        notes["weights"] = "int8 linear layers, embeddings/lm_head bf16"
    else:
        base = shape.params * weight_bytes
        notes["weights"] = f"{shape.params / 1e9:.2f} B params x {weight_bytes:g} B" + (", tied" if shape.tied else "")
    full_weights = base + (base if run.reference_model and not run.use_peft else 0)
    if run.reference_model and not run.use_peft:
        notes["weights"] += " + frozen reference copy (beta > 0)"
    weights = full_weights / n if zero.stage == 3 else full_weights
    # Host copy: from_pretrained reads the checkpoint into host memory before the weights move to the GPU, and
    # save_model serialises them back through it (with the offloaded states present). Quantized models load
    # straight to the GPU (device_map); ZeRO-3 with zero3_init_flag partitions them as they load.
    if device == "cuda" and not (run.load_in_4bit or run.load_in_8bit):
        loaded = shape.params * run.dtype_bytes * (2 if run.reference_model and not run.use_peft else 1)
        cpu["weights"] = loaded / n if zero.stage == 3 else loaded
        notes["cpu:weights"] = "one copy of the weights: the checkpoint as read, the model as saved"
    if zero.stage == 3 and zero.offload_params:
        cpu["weights"] = cpu.get("weights", 0.0) + weights
        weights = 0.0

    # trainable parameters: PEFT keeps adapters in fp32 unless DeepSpeed casts them or the base is quantized
    lora_n = shape.lora_params(run.lora_r, run.lora_targets) if run.use_peft else 0
    trainable = lora_n if run.use_peft else shape.params
    quantized = run.load_in_4bit or run.load_in_8bit
    train_bytes = (2 if (ds and mixed) or quantized else 4) if run.use_peft else weight_bytes
    lora = lora_n * train_bytes / (n if zero.stage == 3 else 1)
    if run.use_peft:
        notes["lora"] = f"{lora_n / 1e6:.1f} M params (r {run.lora_r}, {'/'.join(run.lora_targets)})"
    if run.use_peft:
        largest = max(run.lora_r * max(shape.module_dims()[t]) for t in run.lora_targets)
    else:
        largest = c["embed"]

    # gradients and optimizer states of the trainable parameters
    if not ds:
        gradients = trainable * train_bytes * (2 if n > 1 else 1)  # DDP also holds its reduction buckets
        states = 2 * train_bytes  # torch AdamW: two moments in the parameters' dtype
        optimizer = trainable * states
        notes["optimizer"] = f"AdamW m+v ({states:g} B/param)"
    else:
        # fp32 m + v, plus the fp32 master partition: ZeRO-1/2 clone it whatever the weights' dtype (stage_1_and_2.py,
        # single_partition_of_fp32_groups); ZeRO-3 keeps the fp32 weights as the master under mixed precision only
        states = 12 if (mixed or zero.stage < 3) else 8
        optimizer = trainable * states / n
        master = " + fp32 master" if states == 12 else ""
        notes["optimizer"] = f"Adam m+v fp32{master} ({states} B/param) / {n} processes"
        if zero.stage == 1:
            gradients = trainable * weight_bytes + (0 if zero.offload_optimizer else trainable * 4 / n)
        else:  # stage 2/3: partitioned; offloaded gradients go to CPU, one parameter's grad is whole at a time
            gradients = (0 if zero.offload_optimizer else trainable * (weight_bytes + 4) / n) + largest * weight_bytes
        if zero.offload_optimizer:
            cpu["optimizer"], optimizer = optimizer, 0.0
            notes["optimizer"] += ", offloaded to CPU"
            # stage_1_and_2.py: the fp32 gradient partition, and (accumulation only) a per-parameter buffer in the
            # weights' dtype that carries earlier micro-batches' gradients (accumulated_grads_in_cpu)
            cpu["gradients"] = trainable * 4 / n
            if run.gradient_accumulation > 1:
                cpu["gradients"] += trainable * weight_bytes / n
            if zero.stage < 3:  # the partition's 16-bit staging copy and the largest gradient's staging buffer
                cpu["zero_buffers"] = trainable * weight_bytes / n + largest * weight_bytes
                notes["cpu:zero_buffers"] = f"{weight_bytes:g} B/param copy of the partition + largest-gradient buffer"
            notes["cpu:optimizer"] = f"pinned fp32 master + DeepSpeedCPUAdam m, v ({states} B/param) / {n}"
            notes["cpu:gradients"] = "fp32 gradient partition" + (
                f" + {weight_bytes:g} B/param accumulation buffer" if run.gradient_accumulation > 1 else "")

    notes["gradients"] = "of the trainable parameters" + (", reduced to CPU" if ds and zero.offload_optimizer else "")

    # DeepSpeed buffers: the reduce bucket(s) exist whatever the model size
    zero_buffers = 0.0
    if ds:
        buckets = (2 if zero.overlap_comm else 1) if zero.contiguous_gradients else 0
        zero_buffers = buckets * zero.reduce_bucket_size * weight_bytes  # in the gradients' (= weights') dtype
        notes["zero_buffers"] = f"{buckets} x reduce_bucket_size {zero.reduce_bucket_size:.0e} x {weight_bytes:g} B"
        if zero.offload_optimizer:
            zero_buffers += largest * weight_bytes  # staging buffer for the largest gradient on its way to CPU
        if zero.stage == 3:
            zero_buffers += DS3_PREFETCH_BUCKET_SIZE * 2 + max(i * o for i, o in shape.module_dims().values()) * 4

    # activations of one micro-batch
    seq = run.prompt_tokens + run.completion_tokens
    tokens = run.micro_batch * seq
    h, i, a = shape.hidden, shape.intermediate, act_bytes
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    # per token and layer: 2 RMSNorms (input + fp32 copies), q/k/v before and after RoPE and the attention output,
    # and the MLP's gate, up, SiLU(gate) and their product
    per_layer = 2 * (a + 8) * h + a * (3 * q + 3 * kv) + 4 * a * i
    if run.use_peft:
        dims = shape.module_dims()
        per_layer += sum(dims[t][0] * (a + (1 if run.lora_dropout else 0)) + run.lora_r * a for t in run.lora_targets)
    if run.activation_checkpointing:  # layer inputs kept; one layer recomputed at a time in backward
        activations = tokens * (shape.layers * a * h + per_layer + a * (2 * i + 2 * h))
    else:
        activations = tokens * shape.layers * per_layer
    activations += tokens * (2 * a + a + 8) * h  # embeddings output, final norm
    if run.eager_attention:
        stored_layers = 1 if run.activation_checkpointing else shape.layers
        activations += stored_layers * run.micro_batch * shape.heads * seq * seq * (2 * a + 1)
    notes["activations"] = (f"micro-batch {run.micro_batch} x {seq} tokens, "
                            f"{'checkpointed' if run.activation_checkpointing else 'no checkpointing'}")

    # log-probs: TRL's fused head projects tiles; on CUDA only completion tokens, on CPU every position
    scored = run.micro_batch * (run.completion_tokens if device == "cuda" else seq - 1)
    tile = min(scored, TRL_TOKEN_TILE) * min(shape.vocab, TRL_VOCAB_TILE)
    logits = tile * a + (tile * 6 * 4 if device != "cuda" else 0)  # torch fallback: ~6 fp32 temporaries per tile
    logits += scored * h * 4 + scored * 10 * 4  # fp32 grad of the hidden states, per-token statistics
    notes["logits"] = f"TRL fused LM head: {min(scored, TRL_TOKEN_TILE)} x {min(shape.vocab, TRL_VOCAB_TILE)} tiles"
    if not run.use_peft:  # the lm_head gradient is accumulated in fp32, then cast to the weights' dtype
        logits += shape.vocab * h * (4 + weight_bytes)
        notes["logits"] += " + fp32 lm_head grad"

    # generation: KV cache of the whole generation batch, prefill temporaries, sampling over the vocabulary
    gen_seq = run.generation_batch * seq
    kv_cache = gen_seq * shape.layers * 2 * kv * a
    kv_cache += run.generation_batch * run.prompt_tokens * 3 * i * a + run.generation_batch * shape.vocab * 4 * 3
    notes["kv_cache"] = f"{run.generation_batch} sequences x {seq} tokens"
    if zero.stage == 3 and zero.gather_for_generation:
        kv_cache += full_weights - weights  # ds3_gather_for_generation: whole weights during generate
        notes["kv_cache"] += " + gathered ZeRO-3 weights"

    static = weights + lora + optimizer + zero_buffers
    dynamic = max(kv_cache, _training(gradients, activations, logits, run.gradient_accumulation))
    if device == "cuda":
        overhead = CUDA_CONTEXT_GIB * GIB + FRAGMENTATION * (static + dynamic)
        notes["overhead"] = f"CUDA context {CUDA_CONTEXT_GIB} GB + {FRAGMENTATION:.0%} allocator fragmentation"
    else:
        overhead = 0.0
    cpu["overhead"] = (HOST_RUNTIME_GIB + (CUDA_HOST_GIB if device == "cuda" else 0.0)) * GIB
    notes["cpu:overhead"] = f"runtime: imports {HOST_RUNTIME_GIB} GB" + (
        f" + CUDA host side {CUDA_HOST_GIB} GB" if device == "cuda" else "")

    def g(x: float) -> float:
        return x / GIB

    return MemoryEstimate(
        weights=g(weights), lora=g(lora), gradients=g(gradients), optimizer=g(optimizer),
        zero_buffers=g(zero_buffers), activations=g(activations), logits=g(logits), kv_cache=g(kv_cache),
        overhead=g(overhead), gpu_gb=gpu_gb, cpu={k: g(v) for k, v in cpu.items()}, notes=notes,
        gradient_accumulation=run.gradient_accumulation, cpu_gb=cpu_gb,
        processes_per_machine=n if processes_per_machine is None else processes_per_machine,
    )


def advise(shape: ModelShape, run: RunSettings, zero: ZeroSetup, gpu_gb: float, num_processes: int = 1,
           device: str = "cuda", cpu_gb: float = math.inf,
           processes_per_machine: int | None = None) -> tuple[str, MemoryEstimate] | None:
    """The single change that saves most, preferring changes after which the run fits on the GPU and in host
    memory; None when it fits."""
    machines = 1 if processes_per_machine is None else -(-num_processes // processes_per_machine)

    def plan(r: RunSettings, z: ZeroSetup, processes: int = num_processes) -> MemoryEstimate:
        return estimate(shape, r, z, gpu_gb, processes, device, cpu_gb, -(-processes // machines))

    base = plan(run, zero)
    if base.fits:
        return None
    candidates: list[tuple[str, RunSettings, ZeroSetup, int]] = []
    n = num_processes
    if not run.activation_checkpointing:
        candidates.append(("enable activation_checkpointing", replace(run, activation_checkpointing=True), zero, n))
    if not run.use_peft:
        candidates.append(("use LoRA (use_peft: true, lora_r: 16 on q/k/v/o)", replace(run, use_peft=True), zero, n))
    elif not run.load_in_4bit:
        candidates.append(("use load_in_4bit (QLoRA; one GPU without DeepSpeed: accelerate_configs/single.yaml)",
                           replace(run, load_in_4bit=True, nested_quant=True), ZeroSetup(), n))
    if base.optimizer > 0.05:
        candidates.append(("offload the optimizer to CPU (accelerate_configs/zero2_offload.yaml)", run,
                           ZeroSetup(stage=2, offload_optimizer=True, overlap_comm=True), n))
    if zero.offload_optimizer and not base.fits_host:
        # the optimizer back on the GPUs, sharded by ZeRO-3 (accelerate_configs/zero3.yaml: DeepSpeed's default
        # buckets) across the fewest GPUs that hold it
        stage3 = ZeroSetup(stage=3, overlap_comm=True)
        for k in (n, 2 * n, 4 * n, 8 * n, 16 * n):
            if plan(run, stage3, k).fits or k == 16 * n:
                candidates.append((f"keep the optimizer on the GPUs with ZeRO-3 across {k} GPUs "
                                   f"(accelerate_configs/zero3.yaml, num_processes {k})", run, stage3, k))
                break
    if base.zero_buffers > 0.25:
        candidates.append(("set zero_optimization.reduce_bucket_size to 5e7 in the DeepSpeed JSON", run,
                           replace(zero, reduce_bucket_size=5e7), n))
    if run.micro_batch > 1:
        candidates.append(("lower per_device_train_batch_size to 1 (raise gradient_accumulation_steps to keep "
                           "the batch)", replace(run, micro_batch=1), zero, n))
    for length in range(run.completion_tokens - 32, 31, -32):
        shorter = replace(run, completion_tokens=length)
        if plan(shorter, zero).fits:
            candidates.append((f"lower max_completion_length to {length}", shorter, zero, n))
            break
    if not candidates:
        return None
    scored = [(label, plan(r, z, k)) for label, r, z, k in candidates]

    def shortfall(e: MemoryEstimate) -> float:  # how far over each budget, relative to it
        return max(0.0, e.peak - e.gpu_gb) / e.gpu_gb + max(0.0, e.host_peak - e.cpu_gb) / e.cpu_gb

    # Prefer changes that fit, then those that need no more GPUs; saves most = least of what is short now (host
    # memory when that is short, else GPU memory).
    saved = (lambda e: e.host_peak) if not base.fits_host else (lambda e: e.peak)
    more_gpus = {label: k > num_processes for label, _, _, k in candidates}
    return min(scored, key=lambda item: (not item[1].fits, shortfall(item[1]), more_gpus[item[0]], saved(item[1])))


def _budgets(est: MemoryEstimate) -> str:
    host = f"host about {est.host_peak:.1f} GB" + ("" if math.isinf(est.cpu_gb) else f" of {est.cpu_gb:g}")
    return f"GPU about {est.peak:.1f} GB of {est.gpu_gb:g} per device, {host}"


def verdict(est: MemoryEstimate, advice: tuple[str, MemoryEstimate] | None) -> str:
    if est.fits:
        return f"verdict: fits: {_budgets(est)} ({est.gpu_gb - est.peak:.1f} GB GPU spare)."
    short = []
    if not est.fits_gpu:
        short.append(f"{est.gpu_gb:g} GB of GPU memory (peak about {est.peak:.1f} GB per device)")
    if not est.fits_host:
        short.append(f"{est.cpu_gb:g} GB of host memory (about {est.host_peak:.1f} GB of CPU RAM for "
                     f"{est.processes_per_machine} process(es))")
    line = f"verdict: does not fit in {' nor in '.join(short)}."
    if advice is None:
        more = "a larger GPU or more processes with ZeRO-3" if not est.fits_gpu else "a machine with more RAM"
        return line + f" No single change of the recipe helps: use {more}."
    label, after = advice
    if after.fits:
        return line + f" The change that saves most: {label} ({_budgets(after)})."
    return line + f" No single change is enough; the one that saves most: {label} ({_budgets(after)})."


def format_table(est: MemoryEstimate) -> str:
    names = {"zero_buffers": "deepspeed buffers", "kv_cache": "kv cache", "logits": "logits (log-probs)"}
    rows = [f"{'term':<20}{'GPU GB':>8}{'CPU GB':>8}  {'phase':<11}what"]
    for term in TERMS:
        cpu = est.cpu.get(term)
        what = "; ".join(w for w in (est.notes.get(term, ""), est.notes.get(f"cpu:{term}", "")) if w)
        rows.append(f"{names.get(term, term):<20}{getattr(est, term):>8.2f}{'' if cpu is None else f'{cpu:.2f}':>8}"
                    f"  {PHASE.get(term, 'always'):<11}{what}")
    rows.append(f"{'peak':<20}{est.peak:>8.2f}{est.host_per_process:>8.2f}  {'':<11}"
                f"GPU: static + max(generation {est.kv_cache:.2f}, training {est.training:.2f}) + overhead; "
                f"CPU: per process")
    budget = "" if math.isinf(est.cpu_gb) else f" of {est.cpu_gb:g} GB"
    rows.append(f"host memory: {est.processes_per_machine} process(es) on this machine x "
                f"{est.host_per_process:.2f} GB = {est.host_peak:.2f} GB{budget}")
    return "\n".join(rows)


# --- reading configs ---

def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:  # huggingface_hub retries for ~25 s when offline; find out in one short connection
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_model_config(name_or_path: str, model_config_dir: str | None = None) -> tuple[dict, str]:
    """The model's config.json as a dict, and where it came from: --model-config DIR, a local model directory,
    the converted SmolLM2 (when already cached), a bundled config, or the Hub."""
    if model_config_dir:
        path = Path(model_config_dir).expanduser() / "config.json"
        if not path.is_file():
            raise PlannerError(f"--model-config {model_config_dir}: no config.json there.")
        return _read_json(path), str(path)
    local = Path(name_or_path).expanduser() / "config.json"
    if local.is_file():
        return _read_json(local), str(local)
    key = name_or_path.lower()
    if key == "smollm2-135m-instruct":
        try:
            from .models import SMOLLM2_NAME, cache_dir

            cached = cache_dir() / SMOLLM2_NAME / "config.json"
            if cached.is_file():  # resolve_model_path would convert the GGUF when not cached: not for a planner
                return _read_json(cached), str(cached)
        except ImportError:
            pass
    if key in BUNDLED_CONFIGS:
        bundled = resources.files("trl_gsm8k") / "resources" / "model_configs" / BUNDLED_CONFIGS[key]
        return json.loads(bundled.read_text()), f"bundled {BUNDLED_CONFIGS[key]}"
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~")) and _hub_reachable():
        try:
            from huggingface_hub import hf_hub_download

            return _read_json(Path(hf_hub_download(name_or_path, "config.json"))), f"the Hub ({name_or_path})"
        except Exception as exc:  # any Hub failure becomes the one-line error below
            reason = f" (the Hub answered: {str(exc).splitlines()[0]})"
    else:
        reason = " (the Hugging Face Hub is not reachable from here)"
    raise PlannerError(f"Cannot find the config of model {name_or_path!r} offline{reason}: give a local directory "
                       "holding its config.json with --model-config DIR, or run where the Hub is reachable.")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PlannerError(f"Cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise PlannerError(f"{path} is not a JSON object.")
    return data


def machines_of(path: str) -> int:
    """``num_machines`` of an accelerate YAML (1 when absent): its processes are spread over that many hosts."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PlannerError(f"Cannot read the accelerate config {path}: {exc}") from None
    return max(1, int(data.get("num_machines") or 1))


def this_machine_ram_gb() -> float:
    import psutil  # installed with accelerate

    return round(psutil.virtual_memory().total / GIB, 1)


def read_accelerate_config(path: str) -> tuple[ZeroSetup, int]:
    """ZeRO stage and offload from an accelerate YAML (and the DeepSpeed JSON it points to), and its num_processes."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PlannerError(f"Cannot read the accelerate config {path}: {exc}") from None
    processes = int(data.get("num_processes") or 1)
    if str(data.get("distributed_type", "NO")).upper() != "DEEPSPEED":
        return ZeroSetup(), processes
    plugin = data.get("deepspeed_config") or {}
    if plugin.get("deepspeed_config_file"):
        ds_file = Path(plugin["deepspeed_config_file"])
        tries = [ds_file] if ds_file.is_absolute() else [ds_file, Path(path).parent.parent / ds_file,
                                                          Path(path).parent / ds_file]
        found = next((p for p in tries if p.is_file()), None)
        if found is None:
            raise PlannerError(f"The DeepSpeed config {ds_file} named in {path} does not exist.")
        zero = _read_json(found).get("zero_optimization") or {}
        stage = int(zero.get("stage", 0))
        return ZeroSetup(
            stage=stage,
            offload_optimizer=(zero.get("offload_optimizer") or {}).get("device", "none") in ("cpu", "nvme"),
            offload_params=(zero.get("offload_param") or {}).get("device", "none") in ("cpu", "nvme"),
            reduce_bucket_size=_number(zero.get("reduce_bucket_size"), DS_REDUCE_BUCKET_SIZE),
            contiguous_gradients=bool(zero.get("contiguous_gradients", True)),
            overlap_comm=bool(zero.get("overlap_comm", stage == 3)),
        ), processes
    stage = int(plugin.get("zero_stage", 2))
    return ZeroSetup(
        stage=stage,
        offload_optimizer=plugin.get("offload_optimizer_device", "none") in ("cpu", "nvme"),
        offload_params=plugin.get("offload_param_device", "none") in ("cpu", "nvme"),
        overlap_comm=stage == 3,
    ), processes


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) else default  # "auto" and absent: DeepSpeed's default


DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}
"""Bytes per weight of each `dtype` a recipe may name (anything else, `auto` included, is counted as float32)."""


def settings_from_args(training_args: Any, model_args: Any, config: Mapping[str, Any], mixed_precision: bool,
                       prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> RunSettings:
    """RunSettings from a parsed recipe (GSM8KGRPOConfig, trl.ModelConfig) and the model's config."""
    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else (
        config.get("dtype") or config.get("torch_dtype") or "float32")
    targets = model_args.lora_target_modules or ["q_proj", "k_proj", "v_proj", "o_proj"]
    if targets == "all-linear" or targets == ["all-linear"]:
        targets = list(ALL_LINEAR)
    return RunSettings(
        dtype_bytes=DTYPE_BYTES.get(str(dtype).replace("torch.", ""), 4),
        mixed_precision=mixed_precision,
        use_peft=bool(model_args.use_peft),
        lora_r=int(model_args.lora_r),
        lora_targets=tuple([targets] if isinstance(targets, str) else targets),
        lora_dropout=(model_args.lora_dropout or 0) > 0,
        load_in_4bit=bool(model_args.load_in_4bit),
        nested_quant=bool(model_args.use_bnb_nested_quant),
        load_in_8bit=bool(model_args.load_in_8bit),
        micro_batch=int(training_args.per_device_train_batch_size),
        generation_batch=int(training_args.per_device_train_batch_size * training_args.steps_per_generation),
        prompt_tokens=prompt_tokens,
        completion_tokens=int(training_args.max_completion_length),
        activation_checkpointing=bool(training_args.activation_checkpointing if hasattr(
            training_args, "activation_checkpointing") else training_args.gradient_checkpointing),
        gradient_accumulation=int(training_args.gradient_accumulation_steps),
        reference_model=training_args.beta > 0,
        eager_attention=model_args.attn_implementation == "eager",
    )


def _flag(argv: Sequence[str], name: str) -> str | None:
    value = None
    for k, arg in enumerate(argv):
        if arg == f"--{name}" and k + 1 < len(argv):
            value = argv[k + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def parse_recipe(recipe: str, overrides: Sequence[str] = ()) -> tuple[Any, Any, bool]:
    """(GSM8KGRPOConfig, trl.ModelConfig, mixed precision) of a recipe. It is parsed with bf16/fp16 off, so that a
    GPU recipe parses on a machine without one, and the precision is read from the recipe and overrides."""
    import yaml

    from .checks import LaunchError
    from .config import parse

    try:
        _, training_args, model_args = parse(["--config", recipe, *overrides, "--bf16", "false", "--fp16", "false"])
    except LaunchError as exc:
        raise PlannerError(str(exc)) from None
    data = yaml.safe_load(Path(recipe).read_text()) or {}
    truthy = ("1", "true", "yes")
    fp16 = str(_flag(overrides, "fp16") or data.get("fp16", False)).lower() in truthy
    bf16 = _flag(overrides, "bf16") or data.get("bf16")
    mixed = fp16 or (not fp16 if bf16 is None else str(bf16).lower() in truthy)  # GRPOConfig: bf16 unless fp16
    return training_args, model_args, mixed


def _positive(value: str, flag: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise PlannerError(f"{flag} must be a positive number, got {value!r}.")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trl_gsm8k.memory",
        description="Estimate a recipe's peak GPU memory per device and host memory per machine without "
                    "downloading weights.",
        epilog="Other --flags override recipe fields, as with trl_gsm8k.train.")
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--gpu-gb", required=True, help="GPU memory per device, GB (2^30 bytes)")
    parser.add_argument("--cpu-gb", help="host memory (RAM) per machine, GB (default: this machine's total)")
    parser.add_argument("--num-processes", help="processes (GPUs); default: the accelerate config's")
    parser.add_argument("--accelerate-config", default="accelerate_configs/zero2_offload.yaml")
    parser.add_argument("--model-config", help="directory holding the model's config.json")
    parser.add_argument("--reduce-bucket-size", help="DeepSpeed zero_optimization.reduce_bucket_size to plan with "
                        f"(default: the DeepSpeed JSON's, else DeepSpeed's {DS_REDUCE_BUCKET_SIZE:.0e})")
    parser.add_argument("--prompt-tokens", default=str(DEFAULT_PROMPT_TOKENS),
                        help=f"longest prompt of a generation batch, tokens (default {DEFAULT_PROMPT_TOKENS})")
    args, overrides = parser.parse_known_args(argv)
    try:
        gpu_gb = _positive(args.gpu_gb, "--gpu-gb")
        cpu_gb = this_machine_ram_gb() if args.cpu_gb is None else _positive(args.cpu_gb, "--cpu-gb")
        prompt_tokens = int(_positive(args.prompt_tokens, "--prompt-tokens"))
        zero, processes = read_accelerate_config(args.accelerate_config)
        if args.reduce_bucket_size is not None:
            zero = replace(zero, reduce_bucket_size=_positive(args.reduce_bucket_size, "--reduce-bucket-size"))
        if args.num_processes is not None:
            processes = _positive(args.num_processes, "--num-processes")
            if processes != int(processes):
                raise PlannerError(f"--num-processes must be a whole number, got {args.num_processes!r}.")
        processes = int(processes)
        per_machine = -(-processes // machines_of(args.accelerate_config))
        if not Path(args.config).is_file():
            raise PlannerError(f"recipe not found: {args.config}")
        training_args, model_args, mixed = parse_recipe(args.config, overrides)
        if not model_args.model_name_or_path:
            raise PlannerError("the recipe sets no model_name_or_path.")
        config, source = load_model_config(model_args.model_name_or_path, args.model_config)
        shape = ModelShape.from_config(config, where=f"the config of {model_args.model_name_or_path} ({source})")
        run = settings_from_args(training_args, model_args, config, mixed, prompt_tokens)
        if run.load_in_4bit and zero.stage > 0:
            raise PlannerError(f"{args.config} loads 4-bit weights, which DeepSpeed ZeRO cannot shard: use "
                               "--accelerate-config accelerate_configs/single.yaml (or ddp.yaml).")
        est = estimate(shape, run, zero, gpu_gb, processes, cpu_gb=cpu_gb, processes_per_machine=per_machine)
        advice = advise(shape, run, zero, gpu_gb, processes, cpu_gb=cpu_gb, processes_per_machine=per_machine)
    except PlannerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trainable = f", LoRA {shape.lora_params(run.lora_r, run.lora_targets) / 1e6:.1f} M trainable" if run.use_peft \
        else ", full fine-tune"
    print(f"{args.config}: {model_args.model_name_or_path} (config: {source}), {shape.params / 1e9:.2f} B params"
          f"{trainable}\n{processes} process(es), {args.accelerate_config}: {zero.describe()}; "
          f"{'bf16/fp16' if mixed else 'fp32'}; prompt {run.prompt_tokens} + completion {run.completion_tokens} "
          f"tokens, micro-batch {run.micro_batch}, generation batch {run.generation_batch}\n"
          f"budgets: {gpu_gb:g} GB per GPU, {cpu_gb:g} GB of host memory per machine"
          f"{' (this machine' + chr(39) + 's RAM; --cpu-gb to plan for another)' if args.cpu_gb is None else ''}\n")
    print(format_table(est))
    if getattr(training_args, "use_vllm", False):
        print("note: use_vllm is on; vLLM's own memory (vllm_gpu_memory_utilization) is not modelled.")
    print(verdict(est, advice))
    return 0


if __name__ == "__main__":
    sys.exit(main())
