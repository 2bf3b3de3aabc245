"""What a recipe can say: `GSM8KScriptArguments` (data, prompt, rewards), `GSM8KGRPOConfig` (TRL's `GRPOConfig` plus
ours) and the parser that reads a recipe with TRL's `ModelConfig`. Training, the memory planner, the probe and the
evaluator read recipes through this module; it holds no behaviour of the trainer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from trl import GRPOConfig

from .data import BUNDLED
from .errors import LaunchError, NeedsGPU
from .models import SMOLLM2_NAME, looks_like_hub_id
from .precision import AUTO, parse_bf16, resolve_bf16

ADVANTAGE_ESTIMATORS = ("group_std", "trl")
CORRECTNESS_REWARD_NAME = "correctness_reward"


@dataclass
class GSM8KGRPOConfig(GRPOConfig):
    """`GRPOConfig` plus the tutorial's advantage and a reference-free KL penalty to π_old.

    All fields work from a YAML recipe through `trl.TrlParser`.
    """

    # TRL's field, widened to take `auto`: resolved in __post_init__ to a bool (trl_gsm8k.precision), so everything
    # downstream (transformers, accelerate, DeepSpeed's "auto") sees True or False.
    bf16: str | None = field(  # a bool once resolved
        default=None,
        metadata={
            "help": "Mixed precision as the GPU recipes use it: bf16 compute, fp32 master weights and optimizer "
            "state. true: bf16 on a GPU, or on a CPU that computes bf16 natively (AMX-BF16, AVX512-BF16; refused "
            "with the fix where it would be emulated). auto: bf16 where native, fp32 elsewhere, said in one line. "
            "false: fp32. Not set: TRL's default, true unless fp16.",
            "nargs": "?", "const": "true",
        },
    )
    allow_emulated_bf16: bool = field(
        default=False,
        metadata={
            "help": "Run bf16 on a CPU without native bf16 (emulated: slower than fp32, numerically the same mixed "
            "precision). For tests of the GPU recipes' precision path on any CPU."
        },
    )

    advantage_estimator: str = field(
        default="group_std",
        metadata={
            "help": "How advantages are computed from the rewards. 'group_std': the tutorial's "
            "(r - group mean) / (population group std + advantage_eps), NaN rewards left out and given 0, "
            "all-equal groups 0. 'trl': TRL's own estimator (sample std + 1e-4, honours scale_rewards and "
            "multi_objective_aggregation).",
            "choices": list(ADVANTAGE_ESTIMATORS),
        },
    )
    advantage_eps: float = field(
        default=1e-8,
        metadata={"help": "Epsilon added to the group std with advantage_estimator='group_std'."},
    )
    kl_old_coef: float = field(
        default=0.0,
        metadata={
            "help": "Coefficient of a KL penalty between the current policy and the policy that generated the "
            "batch (π_old, k3 estimator, weighted by π_θ/π_old when use_bias_correction_kl as TRL does for its "
            "reference KL), added to the loss; needs no reference model. Only non-zero when a "
            "generation batch is reused after an optimizer step (num_iterations > 1 or "
            "steps_per_generation > gradient_accumulation_steps). Needs disable_dropout: true. Logged as 'kl_old'."
        },
    )

    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "Dynamic sampling (DAPO): drop the groups whose dynamic_sampling_reward is the same for every "
            "completion (advantage 0, nothing to learn) and refill the generation batch with groups of further "
            "prompts, up to max_sampling_rounds generations per batch. Logged as sampling/rounds, "
            "sampling/groups_generated, sampling/groups_kept."
        },
    )
    dynamic_sampling_reward: str = field(
        default=CORRECTNESS_REWARD_NAME,
        metadata={
            "help": "Name of the reward function whose within-group variance decides which groups are kept (one "
            "function, not the weighted sum: small format/length terms would keep all-wrong groups alive). It may "
            "have weight 0 in reward_weights."
        },
    )
    max_sampling_rounds: int = field(
        default=4,
        metadata={
            "help": "With dynamic_sampling, at most this many generation rounds per generation batch; when the "
            "batch is still not full, it trains on the groups it kept and fills the rest as dynamic_sampling_fill "
            "says (logged as sampling/groups_short)."
        },
    )
    dynamic_sampling_fill: str = field(
        default="masked",
        metadata={
            "help": "With dynamic_sampling, what fills a batch still short after max_sampling_rounds: the last "
            "round's dropped groups, either masked out of the loss ('masked': train only on the kept groups) or "
            "trained on their advantages from the summed reward, those whose summed reward still varies first "
            "('trained': while no completion is correct, the format reward keeps teaching).",
            "choices": ["masked", "trained"],
        },
    )

    def __post_init__(self) -> None:
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(
                f"advantage_estimator must be one of {ADVANTAGE_ESTIMATORS}, got {self.advantage_estimator!r}."
            )
        if not self.advantage_eps >= 0:
            raise ValueError(f"advantage_eps must be >= 0, got {self.advantage_eps}.")
        if not self.kl_old_coef >= 0:
            raise ValueError(f"kl_old_coef must be >= 0, got {self.kl_old_coef}.")
        # Before TrainingArguments' own checks: bf16 on the CPU needs use_cpu there, and `auto` must be a bool.
        self.bf16, self.use_cpu, self.precision_note = resolve_bf16(
            self.bf16, self.fp16, self.use_cpu, allow_emulated=self.allow_emulated_bf16)
        # GRPOConfig resolves steps_per_generation and checks that the generation batch holds whole groups;
        # its message names generation_batch_size, which users rarely set, so say where the number comes from.
        try:
            super().__post_init__()
        except ValueError as error:
            if "must be divisible by num_generations" not in str(error):
                raise
            raise ValueError(
                f"{error} The generation batch is per_device_train_batch_size ({self.per_device_train_batch_size}) "
                f"× processes ({self.world_size}) × steps_per_generation ({self.steps_per_generation}); it must "
                f"hold whole groups of num_generations ({self.num_generations}) completions per prompt."
            ) from error
        if self.advantage_estimator == "group_std":
            if self.scale_rewards != "group":
                raise ValueError(
                    f"scale_rewards={self.scale_rewards!r} only applies to advantage_estimator='trl'; "
                    "advantage_estimator='group_std' always scales by the group std. Set one or the other."
                )
            if self.multi_objective_aggregation != "sum_then_normalize":
                raise ValueError(
                    "advantage_estimator='group_std' sums the weighted rewards, then normalises per group; "
                    f"multi_objective_aggregation={self.multi_objective_aggregation!r} needs advantage_estimator='trl'."
                )
        generate_every = self.steps_per_generation * self.num_iterations
        if self.kl_old_coef > 0 and self.gradient_accumulation_steps % generate_every == 0:
            raise ValueError(
                f"kl_old_coef={self.kl_old_coef} has nothing to compare: with num_iterations={self.num_iterations}, "
                f"steps_per_generation={self.steps_per_generation} and gradient_accumulation_steps="
                f"{self.gradient_accumulation_steps}, every update uses completions sampled from the current "
                "policy (π_old = π_θ), so the KL term is identically zero. Set num_iterations > 1 or "
                "steps_per_generation > gradient_accumulation_steps (so that a generation batch is reused after "
                "an optimizer step), or set kl_old_coef to 0."
            )
        if self.dynamic_sampling_fill not in ("masked", "trained"):
            raise ValueError(f"dynamic_sampling_fill must be 'masked' or 'trained', got {self.dynamic_sampling_fill!r}.")
        if self.max_sampling_rounds < 1:
            raise ValueError(f"max_sampling_rounds must be >= 1, got {self.max_sampling_rounds}.")
        if self.dynamic_sampling:
            if self.use_vllm:
                raise ValueError("dynamic_sampling is not supported with use_vllm (tested only with transformers' "
                                 "generation): set use_vllm: false or dynamic_sampling: false.")
            local = self.generation_batch_size // self.world_size
            if local % self.num_generations:
                # Each process judges and keeps whole groups of its own; a group split across processes could be
                # kept by one and dropped by the other.
                raise ValueError(
                    f"dynamic_sampling needs each process's generation batch to hold whole groups: "
                    f"per_device_train_batch_size ({self.per_device_train_batch_size}) × steps_per_generation "
                    f"({self.steps_per_generation}) = {local} completions is not a multiple of num_generations "
                    f"({self.num_generations}). Make per_device_train_batch_size × steps_per_generation a multiple of "
                    f"num_generations."
                )
        if self.kl_old_coef > 0 and not self.disable_dropout:
            # π_old's log-probs and the loss pass run in train mode: with dropout on they see different masks, so
            # identical weights give a non-zero KL (measured: per-token log-prob differences up to 0.12 with LoRA
            # dropout 0.05) and the penalty pushes against noise.
            raise ValueError(
                f"kl_old_coef={self.kl_old_coef} needs disable_dropout: true. With dropout active, π_old's log-probs "
                "and the loss pass use different dropout masks, so the KL to π_old is not zero even when the weights "
                "are identical. Set disable_dropout: true (it also switches off LoRA dropout), or set kl_old_coef to 0."
            )



@dataclass
class GSM8KScriptArguments:
    """What to train on and which rewards score it."""

    dataset_source: str = field(
        default=BUNDLED,
        metadata={"help": "'bundled' (the GSM8K copy in this package), a local directory of the release's "
                  "train.jsonl/test.jsonl, or 'openai/gsm8k' (the Hub)."},
    )
    dataset_train_split: str = field(default="train", metadata={"help": "GSM8K split to train on."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N problems."})
    max_solution_steps: int | None = field(
        default=None,
        metadata={"help": "Train only on problems whose gold solution has at most N calculation steps (GSM8K's train "
                  "solutions have 0-9; 2 keeps 2,734 of 7,473 train problems): easy first, for a model that solves too few to learn."},
    )
    prompt_format: str = field(default="chat", metadata={"help": "'chat' (system + user messages) or 'plain'."})
    system_prompt: str | None = field(
        default=None, metadata={"help": "Replaces the default instruction (trl_gsm8k.data.SYSTEM_PROMPT)."}
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["correctness", "format"],
        metadata={"help": "Short names (correctness, correctness_strict, format, length, shaped, steps, tag_format) or "
                  "dotted import paths; weighted by reward_weights."},
    )
    doctor: bool = field(
        default=True,
        metadata={"help": "Watch the logged metrics and warn once per problem found (truncation, zero-variance "
                  "groups, format reward stuck at 0, ...), with the fix (trl_gsm8k.doctor)."},
    )


def make_parser():
    from trl import ModelConfig, TrlParser

    return TrlParser((GSM8KScriptArguments, GSM8KGRPOConfig, ModelConfig))


def parse(argv: list[str] | None = None):
    """Parse a recipe and overrides; a bad recipe raises `LaunchError` with one clear line (the CLI prints it). A GPU
    setting the CPU cannot run (`NeedsGPU`) also names every override that makes the recipe a CPU smoke test."""
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    with _recipe_errors():
        try:
            return make_parser().parse_args_and_config(args=argv)
        except NeedsGPU as exc:
            raise LaunchError(f"{exc} {_cpu_smoke_test_hint(argv, exc.flags)}".rstrip()) from None


def _cpu_smoke_test_hint(argv: list[str], refused: dict[str, str]) -> str:
    """The recipe parsed again with the refused settings switched off (so the hint's flags get past the precision
    rule by construction), then every other GPU-only setting it has (trl_gsm8k.checks)."""

    flags = dict(refused)
    for _ in range(3):  # fp16, then TRL's default bf16, are refused one at a time
        try:
            _, training_args, model_args = make_parser().parse_args_and_config(
                args=[*argv, *(a for name, value in flags.items() for a in (f"--{name}", value))])
            break
        except NeedsGPU as again:
            flags.update(again.flags)
        except (ValueError, OSError):  # another problem of the recipe: reported once it is fixed
            return ""
    else:
        return ""
    return cpu_smoke_test_hint(cpu_smoke_test_flags(training_args, model_args, flags), model_args.model_name_or_path)


class Recipe(NamedTuple):
    script_args: GSM8KScriptArguments
    training_args: GSM8KGRPOConfig
    model_args: Any  # trl.ModelConfig
    mixed_precision: bool  # bf16 or fp16 asked for, by the recipe or the overrides


def read_recipe(recipe: str, overrides: Sequence[str] = ()) -> Recipe:
    """A recipe's settings, for tools that plan or evaluate rather than train: the YAML is read once, and the
    dataclasses are built with bf16/fp16 off so that a GPU recipe reads on a machine without a GPU;
    ``mixed_precision`` keeps what was asked (GRPOConfig's default: bf16 unless fp16). The recipe's ``env`` block
    is not applied. Raises `LaunchError` as :func:`parse` does.
    """
    import yaml

    parser = make_parser()
    with _recipe_errors():
        with open(recipe) as f:
            data = yaml.safe_load(f)
        if not isinstance(data, dict):
            raise ValueError(f"Config file {recipe} must contain a YAML mapping.")
        data.pop("env", None)
        unknown = parser.set_defaults_with_config(**data)
        if unknown:
            raise ValueError(f"Unknown arguments from config file: {unknown}.")
        asked, _ = parser.parse_known_args(list(overrides))  # recipe values as defaults, overrides on top
        fp16 = bool(asked.fp16)
        bf16 = parse_bf16(asked.bf16)  # `auto` plans as bf16: what it is on a GPU with bf16
        mixed = fp16 or (not fp16 if bf16 is None else bf16 == AUTO or bool(bf16))
        script_args, training_args, model_args = parser.parse_args_into_dataclasses(
            args=[*overrides, "--bf16", "false", "--fp16", "false"])
    return Recipe(script_args, training_args, model_args, mixed)


@contextmanager
def _recipe_errors() -> Iterator[None]:
    import yaml

    try:
        yield
    except FileNotFoundError as exc:
        raise LaunchError(f"recipe not found: {exc.filename or exc}") from None
    except OSError as exc:  # a directory, no permission: say which path, not a traceback
        raise LaunchError(f"cannot read the recipe {exc.filename or ''}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise LaunchError(f"the recipe is not valid YAML: {exc}") from None
    except ValueError as exc:
        message = str(exc)
        if "bf16/gpu" in message:
            message = ("bf16: true needs a GPU with bf16 (NVIDIA Ampere or newer) or a CPU that computes it natively. "
                       "Set `bf16: auto` (fp32 where bf16 is not native) or `bf16: false` in the recipe (or pass "
                       "--bf16 auto).")
        elif "Unknown arguments from config file" in message:
            message += " (check the key's spelling: recipe keys are fields of GSM8KScriptArguments, " \
                       "GSM8KGRPOConfig or trl.ModelConfig)"
        raise LaunchError(message) from None


def cpu_smoke_test_flags(training_args: Any, model_args: Any, refused: dict[str, str] | None = None) -> dict[str, str]:
    """The command-line overrides that run a GPU recipe on the CPU, as a smoke test of its code path: each setting
    the CPU cannot run switched off. ``refused``: overrides already known (a `NeedsGPU`'s ``flags``).

    >>> from types import SimpleNamespace as N
    >>> cpu_smoke_test_flags(N(use_cpu=False, bf16=False, fp16=False, use_vllm=False),
    ...                      N(dtype="bfloat16", load_in_4bit=True, load_in_8bit=False), {"bf16": "false"})
    {'use_cpu': 'true', 'bf16': 'false', 'dtype': 'float32', 'load_in_4bit': 'false'}
    """
    refused = refused or {}
    bf16 = refused.get("bf16", "true" if training_args.bf16 else "false") == "true"
    flags = {"use_cpu": "true"} if not training_args.use_cpu else {}
    flags.update(refused)
    if training_args.fp16:
        flags["fp16"] = "false"
    # Half-precision weights without bf16 mixed precision would compute in emulated half precision and update the
    # weights without an fp32 copy: the smoke test would test something no recipe runs.
    if model_args.dtype == "float16" or (model_args.dtype == "bfloat16" and not bf16):
        flags["dtype"] = "float32"
    for name in ("load_in_4bit", "load_in_8bit"):
        if getattr(model_args, name, False):
            flags[name] = "false"
    if getattr(training_args, "use_vllm", False):
        flags["use_vllm"] = "false"
    return flags


def cpu_smoke_test_hint(flags: dict[str, str], model_name_or_path: str | None) -> str:
    """One sentence naming the overrides that make a GPU recipe a CPU smoke test."""
    appended = " ".join(f"--{name} {value}" for name, value in flags.items())
    hint = f"To smoke-test this recipe on the CPU, append `{appended}`"
    name = model_name_or_path or ""
    if name.lower() != SMOLLM2_NAME and looks_like_hub_id(name) and not os.path.exists(os.path.expanduser(name)):
        hint += f" (with `--model_name_or_path {SMOLLM2_NAME} --max_steps 2` for a quick one on the offline model)"
    return hint + "."
