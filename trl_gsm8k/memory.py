"""Will a recipe fit? Peak GPU memory per device and host (CPU) memory per machine, from the model's config alone.

    python -m trl_gsm8k.memory --config recipes/<recipe>.yaml [--gpu-gb 8] [--cpu-gb 32] [--num-processes N]
        [--accelerate-config accelerate_configs/zero2_offload.yaml] [--model-config DIR] [--prompt-tokens 200]
        [--reduce-bucket-size 5e8] [--any_recipe_field value ...]

A GPU plan needs --gpu-gb. A recipe with `use_cpu: true`, or any recipe planned without --gpu-gb on a machine without
CUDA, gets a CPU plan instead: the run's tensors all live in host memory, so every term, the "device" ones
(activations, logits, KV cache) included, is counted once in one host figure, judged against --cpu-gb (default: this
machine's MemAvailable).

Prints each term in GB (2^30 bytes, as torch and nvidia-smi count) on the GPU and in host memory, and a one-line
verdict that judges both (--cpu-gb defaults to this machine's total RAM; MemAvailable for a CPU plan), names the one that does not fit and the
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
gradient_accumulation_steps > 1) plus DeepSpeedCPUAdam's fp32 m and v. Processes on one machine share its RAM
with one launcher (`accelerate launch`'s own process). A CPU plan's host memory per process is all of that but the
CUDA parts and the weights' second copy, plus the device peak:

    launcher + processes x (host terms + weights + LoRA + optimizer + DeepSpeed buffers + max(generation, training))

Measured against real steps, and the CPU plan against `make demo`: benchmarks/memory.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

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
# The launching process, once per machine: `accelerate launch` (which, for DeepSpeed, runs torch.distributed.run's
# elastic agent in-process) stays resident beside the workers with torch and accelerate imported. Measured 0.27 GB
# RSS under `make demo`'s command on a CPU (benchmarks/memory.md); on a GPU machine assumed the same.
LAUNCHER_GIB = 0.27
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
    """Memory of the training phase. Without accumulation the gradients fill in during backward as the activations
    are freed (the trainer sets them to None after each step); with it, earlier micro-batches' gradients are all
    there in the next backward."""
    return (gradients + activations if accumulation > 1 else max(gradients, activations)) + logits


@dataclass(frozen=True)
class MemoryEstimate:
    """GB (2^30 bytes) on each GPU per term; `cpu` holds the host memory of one process by term (the same names;
    `overhead` is the runtime); `processes_per_machine` of them and the `launcher` share `cpu_gb`. With
    `device="cpu"` (a CPU plan) the per-term fields are the model's own tensors, which live in host memory there:
    the host figure counts them as well, each once."""

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
    launcher: float = 0.0  # host memory of the launching process, once per machine
    device: str = "cuda"

    @property
    def training(self) -> float:
        return _training(self.gradients, self.activations, self.logits, self.gradient_accumulation)

    @property
    def host_per_process(self) -> float:
        """Host memory of one training process: its host terms and, on a CPU, its device peak too."""
        return sum(self.cpu.values()) + (self.peak if self.device == "cpu" else 0.0)

    @property
    def host_peak(self) -> float:
        """Host memory of all this run's processes on one machine, and of their launcher."""
        return self.processes_per_machine * self.host_per_process + self.launcher

    def host_rows(self) -> list[tuple[str, float, str, str]]:
        """Host memory of one process as (term, GB, phase, what), each term's parts once, in TERMS order. A GPU plan
        lists the host parts; a CPU plan also lists the device part of every term above 0 (in RAM there), beside a
        host part when the term has both (DeepSpeed's offload copies). On a CPU `host_per_process` is the rows of
        phase "always" plus max(generation, training) of the others, training combined as in `training`."""
        rows = []
        for term in TERMS:
            device_part, host_part = getattr(self, term), self.cpu.get(term)
            if self.device == "cpu" and device_part > 0:
                rows.append((term, device_part, PHASE.get(term, "always"), self.notes.get(term, "")))
            if host_part is not None:
                label = f"{term} (offloaded)" if self.device == "cpu" and device_part > 0 else term
                rows.append((label, host_part, "always", self.notes.get(f"cpu:{term}", "")))
        return rows

    @property
    def fits_gpu(self) -> bool:
        return self.device == "cpu" or self.peak <= self.gpu_gb

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
    """Peak memory per device of one GRPO run, and its host memory. `device="cpu"` is a CPU plan: it drops the CUDA
    terms (context, fragmentation, CUDA's host side, a host copy of weights that already are in RAM), models TRL's
    CPU log-prob path, and counts the device peak in host memory (`host_per_process`); `gpu_gb` does not apply.
    `processes_per_machine` (default: all `num_processes`) and one launcher share `cpu_gb`.

    >>> s = ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=1000, tied=True)
    >>> e = estimate(s, RunSettings(), gpu_gb=1.0)
    >>> e.fits, round(e.weights * GIB / 2) == s.params
    (True, True)
    """
    n = num_processes
    weights = _weights(shape, run, zero, n, device)
    # Insertion order is the order of `cpu` (host_per_process sums it; benchmarks/host_memory.py prints it).
    terms = {
        "weights": weights,
        "lora": _lora(shape, run, zero, n),
        "optimizer": _optimizer(shape, run, zero, n),
        "gradients": _gradients(shape, run, zero, n),
        "zero_buffers": _zero_buffers(shape, run, zero, n),
        "activations": _activations(shape, run),
        "logits": _logits(shape, run, zero, device),
        "kv_cache": _kv_cache(shape, run, zero, elsewhere=_model_weights(shape, run, zero)[0] - weights.gpu),
    }
    gpu = {name: term.gpu for name, term in terms.items()}
    static = gpu["weights"] + gpu["lora"] + gpu["optimizer"] + gpu["zero_buffers"]
    training = _training(gpu["gradients"], gpu["activations"], gpu["logits"], run.gradient_accumulation)
    terms["overhead"] = _overhead(static + max(gpu["kv_cache"], training), device)

    notes: dict[str, str] = {}
    for name, term in terms.items():
        if term.note:
            notes[name] = term.note
        if term.cpu_note:
            notes[f"cpu:{name}"] = term.cpu_note
    return MemoryEstimate(
        **{name: term.gpu / GIB for name, term in terms.items()}, gpu_gb=gpu_gb,
        cpu={name: term.cpu / GIB for name, term in terms.items() if term.cpu is not None}, notes=notes,
        gradient_accumulation=run.gradient_accumulation, cpu_gb=cpu_gb,
        processes_per_machine=n if processes_per_machine is None else processes_per_machine,
        launcher=_launcher() / GIB, device=device,
    )


# --- the terms of estimate(), in bytes ---

@dataclass(frozen=True)
class _Term:
    """One term in bytes: on each GPU, in the host memory of one process (None: none there), and what each counts."""

    gpu: float = 0.0
    cpu: float | None = None
    note: str = ""
    cpu_note: str = ""


def _deepspeed_casts(run: RunSettings, zero: ZeroSetup) -> bool:
    """DeepSpeed casts the whole module, adapters included, to bf16/fp16 under mixed precision."""
    return zero.stage > 0 and run.mixed_precision


def _weight_bytes(run: RunSettings, zero: ZeroSetup) -> float:
    """Bytes per weight on the GPU: 16 bits when DeepSpeed casts them, else the recipe's `dtype`."""
    return 2 if _deepspeed_casts(run, zero) else run.dtype_bytes


def _activation_bytes(run: RunSettings) -> float:
    """Bytes per activation: 16 bits under mixed precision or with a quantized base, else the recipe's `dtype`."""
    return 2 if (run.mixed_precision or run.load_in_4bit or run.load_in_8bit) else run.dtype_bytes


def _reference_copy(run: RunSettings) -> bool:
    """beta > 0 loads a frozen reference model; with PEFT the reference is the base with the adapters off, no copy."""
    return run.reference_model and not run.use_peft


def _trainable(shape: ModelShape, run: RunSettings, zero: ZeroSetup) -> tuple[int, float]:
    """Trainable parameters and bytes per parameter. PEFT keeps the adapters in fp32 unless DeepSpeed casts them
    (mixed precision) or the base is quantized (16 bits then); a full fine-tune trains the weights as they are."""
    if not run.use_peft:
        return shape.params, _weight_bytes(run, zero)
    quantized = run.load_in_4bit or run.load_in_8bit
    return shape.lora_params(run.lora_r, run.lora_targets), 2 if _deepspeed_casts(run, zero) or quantized else 4


def _largest_trainable(shape: ModelShape, run: RunSettings) -> int:
    """Elements of the largest trainable parameter, whose whole gradient DeepSpeed holds (and stages) at once: the
    larger LoRA matrix of the widest target module, or the embedding."""
    if run.use_peft:
        return max(run.lora_r * max(shape.module_dims()[t]) for t in run.lora_targets)
    return shape.counts()["embed"]


def _model_weights(shape: ModelShape, run: RunSettings, zero: ZeroSetup) -> tuple[float, str]:
    """Bytes of the whole model as it sits on a GPU (with the reference copy), before ZeRO-3 partitions it. Quantized
    bases quantize the decoder's linear layers only; embeddings, lm_head, norms and biases stay in 16 bits. NF4
    (bitsandbytes 4-bit) adds one absmax per NF4_BLOCK weights: fp32, or 8 bits plus fp32 per 256 blocks when
    nested."""
    c = shape.counts()
    unquantized = c["embed"] + c["lm_head"] + c["small"]
    if run.load_in_4bit:
        per_weight = 0.5 + ((1 + 4 / 256) if run.nested_quant else 4) / NF4_BLOCK
        base = c["linear"] * per_weight + unquantized * 2
        note = f"NF4 {per_weight:.3f} B/weight incl. constants, embeddings/lm_head bf16"
    elif run.load_in_8bit:
        base = c["linear"] * 1 + unquantized * 2
        note = "int8 linear layers, embeddings/lm_head bf16"
    else:
        weight_bytes = _weight_bytes(run, zero)
        base = shape.params * weight_bytes
        note = f"{shape.params / 1e9:.2f} B params x {weight_bytes:g} B" + (", tied" if shape.tied else "")
    if _reference_copy(run):
        return base + base, note + " + frozen reference copy (beta > 0)"
    return base, note


def _weights(shape: ModelShape, run: RunSettings, zero: ZeroSetup, n: int, device: str) -> _Term:
    """The weights: on each GPU, a 1/n partition under ZeRO-3, in host memory instead with ZeRO-3's offload_param.
    Host memory also holds one copy in the checkpoint's dtype: from_pretrained reads the checkpoint there before the
    weights move to the GPU, and save_model serialises them back through it (with the offloaded states present).
    Quantized bases load straight to the GPU (device_map), and ZeRO-3 with zero3_init_flag partitions the weights as
    they load. With `device="cpu"` the device term already is that copy."""
    whole, note = _model_weights(shape, run, zero)
    gpu = whole / n if zero.stage == 3 else whole
    cpu, cpu_note = None, ""
    if device == "cuda" and not (run.load_in_4bit or run.load_in_8bit):
        loaded = shape.params * run.dtype_bytes * (2 if _reference_copy(run) else 1)
        cpu = loaded / n if zero.stage == 3 else loaded
        cpu_note = "one copy of the weights: the checkpoint as read, the model as saved"
    if zero.stage == 3 and zero.offload_params:
        cpu, gpu = (cpu or 0.0) + gpu, 0.0
    return _Term(gpu, cpu, note, cpu_note)


def _lora(shape: ModelShape, run: RunSettings, zero: ZeroSetup, n: int) -> _Term:
    """The LoRA adapters: r x (in + out) per target module and layer, partitioned under ZeRO-3."""
    if not run.use_peft:
        return _Term()
    count, train_bytes = _trainable(shape, run, zero)
    return _Term(count * train_bytes / (n if zero.stage == 3 else 1),
                 note=f"{count / 1e6:.1f} M params (r {run.lora_r}, {'/'.join(run.lora_targets)})")


def _optimizer(shape: ModelShape, run: RunSettings, zero: ZeroSetup, n: int) -> _Term:
    """Adam's states of the trainable parameters. torch AdamW keeps m and v in the parameters' dtype. DeepSpeed keeps
    fp32 m and v and an fp32 master, partitioned over the n processes: ZeRO-1/2 clone the master whatever the
    weights' dtype (stage_1_and_2.py, single_partition_of_fp32_groups), ZeRO-3 keeps the fp32 weights as the master
    under mixed precision only. Offloaded, they are pinned host memory that DeepSpeedCPUAdam updates."""
    trainable, train_bytes = _trainable(shape, run, zero)
    if zero.stage == 0:
        states = 2 * train_bytes
        return _Term(trainable * states, note=f"AdamW m+v ({states:g} B/param)")
    states = 12 if (run.mixed_precision or zero.stage < 3) else 8
    optimizer = trainable * states / n
    note = f"Adam m+v fp32{' + fp32 master' if states == 12 else ''} ({states} B/param) / {n} processes"
    if not zero.offload_optimizer:
        return _Term(optimizer, note=note)
    return _Term(0.0, optimizer, note + ", offloaded to CPU",
                 f"pinned fp32 master + DeepSpeedCPUAdam m, v ({states} B/param) / {n}")


def _gradients(shape: ModelShape, run: RunSettings, zero: ZeroSetup, n: int) -> _Term:
    """Gradients of the trainable parameters. Without DeepSpeed, one per parameter in its dtype, twice with DDP (its
    reduction buckets). ZeRO-1 keeps whole gradients in the weights' dtype and an fp32 partition; ZeRO-2/3 keep the
    partition in both dtypes and the largest parameter's whole gradient. With optimizer offload the partition is
    reduced to host memory (stage_1_and_2.py): the fp32 gradient partition and, with gradient accumulation, a
    buffer in the weights' dtype carrying earlier micro-batches' gradients (accumulated_grads_in_cpu)."""
    trainable, train_bytes = _trainable(shape, run, zero)
    note = "of the trainable parameters"
    if zero.stage == 0:
        return _Term(trainable * train_bytes * (2 if n > 1 else 1), note=note)
    weight_bytes, offload = _weight_bytes(run, zero), zero.offload_optimizer
    if zero.stage == 1:
        gpu = trainable * weight_bytes + (0 if offload else trainable * 4 / n)
    else:
        gpu = (0 if offload else trainable * (weight_bytes + 4) / n) + _largest_trainable(shape, run) * weight_bytes
    if not offload:
        return _Term(gpu, note=note)
    cpu = trainable * 4 / n
    if run.gradient_accumulation > 1:
        cpu += trainable * weight_bytes / n
    return _Term(gpu, cpu, note + ", reduced to CPU", "fp32 gradient partition" + (
        f" + {weight_bytes:g} B/param accumulation buffer" if run.gradient_accumulation > 1 else ""))


def _zero_buffers(shape: ModelShape, run: RunSettings, zero: ZeroSetup, n: int) -> _Term:
    """DeepSpeed's own buffers, whatever the number of trainable parameters. On each GPU: the reduce bucket in the
    gradients' (= weights') dtype, twice with overlap_comm, none without contiguous_gradients; with optimizer
    offload, a staging buffer for the largest gradient on its way to the host; under ZeRO-3, the 16-bit prefetch
    bucket (DS3_PREFETCH_BUCKET_SIZE) and 4 bytes per weight of the largest linear layer. In host memory, with
    ZeRO-1/2 optimizer offload: a copy of the partition in the weights' dtype and the largest gradient's buffer."""
    if zero.stage == 0:
        return _Term()
    weight_bytes, largest = _weight_bytes(run, zero), _largest_trainable(shape, run)
    buckets = (2 if zero.overlap_comm else 1) if zero.contiguous_gradients else 0
    gpu = buckets * zero.reduce_bucket_size * weight_bytes
    note = f"{buckets} x reduce_bucket_size {zero.reduce_bucket_size:.0e} x {weight_bytes:g} B"
    if zero.offload_optimizer:
        gpu += largest * weight_bytes
    if zero.stage == 3:
        gpu += DS3_PREFETCH_BUCKET_SIZE * 2 + max(i * o for i, o in shape.module_dims().values()) * 4
    if not (zero.offload_optimizer and zero.stage < 3):
        return _Term(gpu, note=note)
    trainable, _ = _trainable(shape, run, zero)
    return _Term(gpu, trainable * weight_bytes / n + largest * weight_bytes, note,
                 f"{weight_bytes:g} B/param copy of the partition + largest-gradient buffer")


def _activations(shape: ModelShape, run: RunSettings) -> _Term:
    """Activations of one micro-batch kept for backward. Per token and layer: 2 RMSNorms (input + fp32 copies), q/k/v
    before and after RoPE and the attention output, the MLP's gate, up, SiLU(gate) and their product, and per LoRA
    target its input (with a 1-byte dropout mask) and r-wide intermediate. Activation checkpointing keeps each
    layer's input and recomputes one layer at a time in backward (with 2 x (intermediate + hidden) more per token).
    Then the embeddings' output and the final norm; eager attention also stores the seq x seq attention per head
    (2 activations + 1 byte per entry), where SDPA and flash attention keep O(sequence) memory."""
    seq = run.prompt_tokens + run.completion_tokens
    tokens = run.micro_batch * seq
    h, i, a = shape.hidden, shape.intermediate, _activation_bytes(run)
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    per_layer = 2 * (a + 8) * h + a * (3 * q + 3 * kv) + 4 * a * i
    if run.use_peft:
        dims = shape.module_dims()
        per_layer += sum(dims[t][0] * (a + (1 if run.lora_dropout else 0)) + run.lora_r * a for t in run.lora_targets)
    if run.activation_checkpointing:
        activations = tokens * (shape.layers * a * h + per_layer + a * (2 * i + 2 * h))
    else:
        activations = tokens * shape.layers * per_layer
    activations += tokens * (2 * a + a + 8) * h
    if run.eager_attention:
        stored_layers = 1 if run.activation_checkpointing else shape.layers
        activations += stored_layers * run.micro_batch * shape.heads * seq * seq * (2 * a + 1)
    return _Term(activations, note=f"micro-batch {run.micro_batch} x {seq} tokens, "
                                   f"{'checkpointed' if run.activation_checkpointing else 'no checkpointing'}")


def _logits(shape: ModelShape, run: RunSettings, zero: ZeroSetup, device: str) -> _Term:
    """Log-probs of one micro-batch through TRL's fused LM head, which projects TRL_TOKEN_TILE x TRL_VOCAB_TILE tiles
    rather than the whole logits: on CUDA of the completion tokens only; on a CPU of every position, through torch's
    fallback with about 6 fp32 temporaries per tile. Then the fp32 gradient of the hidden states and 10 fp32
    statistics per token; a full fine-tune also accumulates the lm_head gradient in fp32 before casting it to the
    weights' dtype."""
    h, a, cuda = shape.hidden, _activation_bytes(run), device == "cuda"
    scored = run.micro_batch * (run.completion_tokens if cuda else run.prompt_tokens + run.completion_tokens - 1)
    tile = min(scored, TRL_TOKEN_TILE) * min(shape.vocab, TRL_VOCAB_TILE)
    logits = tile * a + (tile * 6 * 4 if not cuda else 0)
    logits += scored * h * 4 + scored * 10 * 4
    note = f"TRL fused LM head: {min(scored, TRL_TOKEN_TILE)} x {min(shape.vocab, TRL_VOCAB_TILE)} tiles"
    if run.use_peft:
        return _Term(logits, note=note)
    return _Term(logits + shape.vocab * h * (4 + _weight_bytes(run, zero)), note=note + " + fp32 lm_head grad")


def _kv_cache(shape: ModelShape, run: RunSettings, zero: ZeroSetup, elsewhere: float) -> _Term:
    """Generation, which TRL runs on the whole per-device generation batch in one `generate` call: its KV cache,
    the prefill's MLP temporaries (3 x intermediate per prompt token) and sampling over the vocabulary (3 fp32 per
    entry and sequence). ZeRO-3's ds3_gather_for_generation gathers the whole weights for it: `elsewhere` are the
    bytes of weights not on this GPU."""
    seq = run.prompt_tokens + run.completion_tokens
    a = _activation_bytes(run)
    kv_cache = run.generation_batch * seq * shape.layers * 2 * (shape.kv_heads * shape.head_dim) * a
    kv_cache += (run.generation_batch * run.prompt_tokens * 3 * shape.intermediate * a
                 + run.generation_batch * shape.vocab * 4 * 3)
    note = f"{run.generation_batch} sequences x {seq} tokens"
    if zero.stage == 3 and zero.gather_for_generation:
        return _Term(kv_cache + elsewhere, note=note + " + gathered ZeRO-3 weights")
    return _Term(kv_cache, note=note)


def _overhead(allocated: float, device: str) -> _Term:
    """On each GPU: the CUDA context and cuBLAS workspace (CUDA_CONTEXT_GIB) and the caching allocator's slack
    (FRAGMENTATION of the `allocated` peak); nothing on a CPU. In host memory, the runtime of one process: the
    imports (HOST_RUNTIME_GIB, measured) and, on a GPU machine, CUDA's host side (CUDA_HOST_GIB, assumed)."""
    cuda = device == "cuda"
    runtime = (HOST_RUNTIME_GIB + (CUDA_HOST_GIB if cuda else 0.0)) * GIB
    cpu_note = f"runtime: imports {HOST_RUNTIME_GIB} GB" + (f" + CUDA host side {CUDA_HOST_GIB} GB" if cuda else "")
    if not cuda:
        return _Term(0.0, runtime, cpu_note=cpu_note)
    return _Term(CUDA_CONTEXT_GIB * GIB + FRAGMENTATION * allocated, runtime,
                 f"CUDA context {CUDA_CONTEXT_GIB} GB + {FRAGMENTATION:.0%} allocator fragmentation", cpu_note)


def _launcher() -> float:
    """Host memory of the process that launches the run, once per machine (LAUNCHER_GIB, measured on a CPU): the
    planner plans `accelerate launch`, whose process stays resident while its workers run."""
    return LAUNCHER_GIB * GIB


# --- the verdict ---

def advise(shape: ModelShape, run: RunSettings, zero: ZeroSetup, gpu_gb: float, num_processes: int = 1,
           device: str = "cuda", cpu_gb: float = math.inf,
           processes_per_machine: int | None = None) -> tuple[str, MemoryEstimate] | None:
    """The single change that saves most, preferring changes after which the run fits on the GPU and in host
    memory; None when it fits. A CPU plan (`device="cpu"`) is offered only what saves RAM on a CPU: no 4-bit base,
    no offload, no more GPUs; instead, without DeepSpeed, whose offload copies the optimizer into the RAM it is in."""
    machines = 1 if processes_per_machine is None else -(-num_processes // processes_per_machine)

    def plan(r: RunSettings, z: ZeroSetup, processes: int = num_processes) -> MemoryEstimate:
        return estimate(shape, r, z, gpu_gb, processes, device, cpu_gb, -(-processes // machines))

    base = plan(run, zero)
    if base.fits:
        return None
    candidates: list[tuple[str, RunSettings, ZeroSetup, int]] = []
    n, cuda = num_processes, device == "cuda"
    if not run.activation_checkpointing:
        candidates.append(("enable activation_checkpointing", replace(run, activation_checkpointing=True), zero, n))
    if not run.use_peft:
        candidates.append(("use LoRA (use_peft: true, lora_r: 16 on q/k/v/o)", replace(run, use_peft=True), zero, n))
    elif not run.load_in_4bit and cuda:
        candidates.append(("use load_in_4bit (QLoRA; one GPU without DeepSpeed: accelerate_configs/single.yaml)",
                           replace(run, load_in_4bit=True, nested_quant=True), ZeroSetup(), n))
    if base.optimizer > 0.05 and cuda:
        candidates.append(("offload the optimizer to CPU (accelerate_configs/zero2_offload.yaml)", run,
                           ZeroSetup(stage=2, offload_optimizer=True, overlap_comm=True), n))
    if zero.stage > 0 and not cuda:
        candidates.append(("launch without DeepSpeed (accelerate_configs/single.yaml)", run, ZeroSetup(), n))
    if zero.offload_optimizer and not base.fits_host and cuda:
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
    if est.device == "cpu":
        return host
    return f"GPU about {est.peak:.1f} GB of {est.gpu_gb:g} per device, {host}"


def verdict(est: MemoryEstimate, advice: tuple[str, MemoryEstimate] | None) -> str:
    if est.fits and est.device == "cpu":
        spare = "" if math.isinf(est.cpu_gb) else f" ({est.cpu_gb - est.host_peak:.1f} GB spare)"
        return f"verdict: fits: {_budgets(est)}{spare}."
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


TERM_NAMES = {"zero_buffers": "deepspeed buffers", "kv_cache": "kv cache", "logits": "logits (log-probs)"}


def format_table(est: MemoryEstimate) -> str:
    if est.device == "cpu":
        return _format_cpu_table(est)
    names = TERM_NAMES
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
                f"{est.host_per_process:.2f} GB + launcher {est.launcher:.2f} GB = {est.host_peak:.2f} GB{budget}")
    return "\n".join(rows)


def _format_cpu_table(est: MemoryEstimate) -> str:
    """A CPU plan: one column, host memory, every term's parts once (`MemoryEstimate.host_rows`)."""
    names = {**TERM_NAMES, "overhead": "runtime"}
    rows = [f"{'term':<32}{'RAM GB':>8}  {'phase':<11}what"]
    for term, gb, phase, what in est.host_rows():
        base, _, offloaded = term.partition(" ")
        name = f"{names.get(base, base)} {offloaded}".strip()
        rows.append(f"{name:<32}{gb:>8.2f}  {phase:<11}{what}")
    always = sum(gb for _, gb, phase, _ in est.host_rows() if phase == "always")
    rows.append(f"{'launcher':<32}{est.launcher:>8.2f}  {'always':<11}accelerate launch's own process, once per "
                "machine")
    budget = "" if math.isinf(est.cpu_gb) else f" of {est.cpu_gb:g} GB"
    rows.append(f"host memory (CPU plan, every term once): {est.processes_per_machine} process(es) x "
                f"(always {always:.2f} + max(generation {est.kv_cache:.2f}, training {est.training:.2f})) "
                f"+ launcher {est.launcher:.2f} = {est.host_peak:.2f} GB{budget}")
    return "\n".join(rows)


# --- reading configs ---

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
    from .models import hub_reachable, looks_like_hub_id

    if "/" in name_or_path and looks_like_hub_id(name_or_path) and hub_reachable():
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


def this_machine_available_gb() -> float:
    """MemAvailable of /proc/meminfo (what `free` shows as available): the RAM a CPU run can take now."""
    import psutil

    return round(psutil.virtual_memory().available / GIB, 1)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def plan_device(use_cpu: bool, gpu_gb: float | None, cuda: bool | None = None) -> str:
    """"cpu" for a CPU plan, "cuda" for a GPU plan: a recipe with use_cpu runs on the CPU; otherwise --gpu-gb asks for a
    GPU plan, and without it a machine without CUDA plans the run where it would run here, on the CPU."""
    if use_cpu:
        if gpu_gb is not None:
            raise PlannerError("the recipe sets use_cpu: true, so it is planned in host memory and --gpu-gb does not "
                               "apply: drop --gpu-gb, or add --use_cpu false to plan it on a GPU.")
        return "cpu"
    if gpu_gb is not None:
        return "cuda"
    if cuda_available() if cuda is None else cuda:
        raise PlannerError("--gpu-gb is required to plan a GPU run (this machine has CUDA): give the GPU memory per "
                           "device, or add --use_cpu true to plan the run on the CPU.")
    return "cpu"


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


NO_CPU_BF16 = " (bf16 asked: this CPU has no native bf16, so `auto` runs in fp32 and `true` is refused at launch)"


def cpu_mixed_precision(mixed: bool, allow_emulated: bool = False, native: str | None | bool = False) -> bool:
    """Whether a run on the CPU computes in bf16 when its recipe asks for mixed precision: where the CPU computes bf16
    natively (`trl_gsm8k.precision.native_cpu_bf16`; `native` overrides it, False: read from this CPU), or emulated
    where `allow_emulated_bf16` says so. Elsewhere `bf16: auto` runs in fp32 (and `bf16: true` is refused at launch)."""
    if not mixed or allow_emulated:
        return mixed
    if native is False:
        from .precision import native_cpu_bf16

        native = native_cpu_bf16()
    return native is not None


def settings_from_args(training_args: Any, model_args: Any, config: Mapping[str, Any], mixed_precision: bool,
                       prompt_tokens: int = DEFAULT_PROMPT_TOKENS, device: str = "cuda") -> RunSettings:
    """RunSettings from a parsed recipe (GSM8KGRPOConfig, trl.ModelConfig) and the model's config. For a CPU plan
    (`device="cpu"`) mixed precision is what this CPU computes (`cpu_mixed_precision`)."""
    if device == "cpu":
        mixed_precision = cpu_mixed_precision(mixed_precision, bool(getattr(training_args, "allow_emulated_bf16", 0)))
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


def _positive_number(value: str) -> float:
    """argparse type of the GB budgets and the bucket size: a finite number above 0."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 < number < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value!r}.")
    return number


def _positive_whole_number(value: str) -> int:
    """argparse type of counts (processes, tokens): a whole number above 0; "2.0" is 2."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (0 < number < math.inf and number == int(number)):
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value!r}.")
    return int(number)


class _ArgumentParser(argparse.ArgumentParser):
    """Reports bad arguments as a PlannerError, so that they print as the one `error:` line other bad input does."""

    def error(self, message: str) -> NoReturn:
        raise PlannerError(message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _ArgumentParser(
        prog="python -m trl_gsm8k.memory",
        description="Estimate a recipe's peak GPU memory per device and host memory per machine without "
                    "downloading weights.",
        epilog="Other --flags override recipe fields, as with trl_gsm8k.train.")
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--gpu-gb", type=_positive_number,
                        help="GPU memory per device, GB (2^30 bytes); required for a GPU plan. Without it on a machine "
                             "without CUDA, and for a recipe with use_cpu: true, the run is planned on the CPU")
    parser.add_argument("--cpu-gb", type=_positive_number,
                        help="host memory (RAM) per machine, GB (default: this machine's total; for a CPU plan its "
                             "MemAvailable)")
    parser.add_argument("--num-processes", type=_positive_whole_number,
                        help="processes (GPUs); default: the accelerate config's")
    parser.add_argument("--accelerate-config", default="accelerate_configs/zero2_offload.yaml")
    parser.add_argument("--model-config", help="directory holding the model's config.json")
    parser.add_argument("--reduce-bucket-size", type=_positive_number,
                        help="DeepSpeed zero_optimization.reduce_bucket_size to plan with (default: the DeepSpeed "
                             f"JSON's, else DeepSpeed's {DS_REDUCE_BUCKET_SIZE:.0e})")
    parser.add_argument("--prompt-tokens", type=_positive_whole_number, default=DEFAULT_PROMPT_TOKENS,
                        help=f"longest prompt of a generation batch, tokens (default {DEFAULT_PROMPT_TOKENS})")
    try:
        args, overrides = parser.parse_known_args(argv)
        zero, processes = read_accelerate_config(args.accelerate_config)
        if args.reduce_bucket_size is not None:
            zero = replace(zero, reduce_bucket_size=args.reduce_bucket_size)
        if args.num_processes is not None:
            processes = args.num_processes
        per_machine = -(-processes // machines_of(args.accelerate_config))
        if not Path(args.config).is_file():  # read_recipe names a missing file, but not a directory
            raise PlannerError(f"recipe not found: {args.config}")
        from .errors import LaunchError
        from .config import read_recipe  # imports TRL, which --help and a bad argument do not need

        try:
            _, training_args, model_args, mixed = read_recipe(args.config, overrides)
        except LaunchError as exc:
            raise PlannerError(str(exc)) from None
        if not model_args.model_name_or_path:
            raise PlannerError("the recipe sets no model_name_or_path.")
        device = plan_device(bool(training_args.use_cpu), args.gpu_gb)
        gpu_gb = math.inf if device == "cpu" else args.gpu_gb
        if args.cpu_gb is not None:
            cpu_gb, against = args.cpu_gb, ""
        elif device == "cpu":
            cpu_gb = this_machine_available_gb()
            against = (f" (MemAvailable of this machine now, /proc/meminfo, of {this_machine_ram_gb():g} GB total RAM; "
                       "--cpu-gb to plan for another)")
        else:
            cpu_gb, against = this_machine_ram_gb(), " (this machine's RAM; --cpu-gb to plan for another)"
        config, source = load_model_config(model_args.model_name_or_path, args.model_config)
        shape = ModelShape.from_config(config, where=f"the config of {model_args.model_name_or_path} ({source})")
        run = settings_from_args(training_args, model_args, config, mixed, args.prompt_tokens, device)
        if run.load_in_4bit and zero.stage > 0:
            raise PlannerError(f"{args.config} loads 4-bit weights, which DeepSpeed ZeRO cannot shard: use "
                               "--accelerate-config accelerate_configs/single.yaml (or ddp.yaml).")
        est = estimate(shape, run, zero, gpu_gb, processes, device, cpu_gb, per_machine)
        advice = advise(shape, run, zero, gpu_gb, processes, device, cpu_gb, per_machine)
    except PlannerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trainable = f", LoRA {shape.lora_params(run.lora_r, run.lora_targets) / 1e6:.1f} M trainable" if run.use_peft \
        else ", full fine-tune"
    print(f"{args.config}: {model_args.model_name_or_path} (config: {source}), {shape.params / 1e9:.2f} B params"
          f"{trainable}\n{processes} process(es), {args.accelerate_config}: {zero.describe()}; "
          f"{'bf16/fp16' if run.mixed_precision else 'fp32'}"
          f"{NO_CPU_BF16 if mixed > run.mixed_precision else ''}"
          f"; prompt {run.prompt_tokens} + completion {run.completion_tokens} "
          f"tokens, micro-batch {run.micro_batch}, generation batch {run.generation_batch}")
    if device == "cpu":
        why = "the recipe sets use_cpu" if training_args.use_cpu else "no --gpu-gb and this machine has no CUDA"
        print(f"CPU plan ({why}): weights, gradients, optimizer, activations, logits and KV cache all live in host "
              f"memory, each counted once\nbudget: {cpu_gb:g} GB of host memory per machine{against}\n")
    else:
        print(f"budgets: {args.gpu_gb:g} GB per GPU, {cpu_gb:g} GB of host memory per machine{against}\n")
    print(format_table(est))
    if getattr(training_args, "use_vllm", False):
        print("note: use_vllm is on; vLLM's own memory (vllm_gpu_memory_utilization) is not modelled.")
    print(verdict(est, advice))
    return 0


if __name__ == "__main__":
    sys.exit(main())
