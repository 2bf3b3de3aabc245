"""`GSM8KGRPOTrainer`: TRL's `GRPOTrainer` with the tutorial's advantage, a reference-free KL and metrics.

Tested with trl 1.16.x (setup.cfg pins ``trl>=1.16,<1.17``). The overrides rely on these TRL internals, each
pinned by ``tests/test_trainer.py``:

- ``_calculate_rewards(inputs, prompts, completions, completion_ids_list)`` returns the rewards gathered across
  all processes, shape ``(num_processes * len(inputs), num_reward_funcs)``, NaN where a function returned None.
- ``_generate_and_score_completions(inputs)`` computes advantages on those gathered rewards and keeps the
  slice ``[process_index * len(inputs), (process_index + 1) * len(inputs))`` in ``output["advantages"]``; it logs
  ``reward``, ``reward_std`` into ``self._metrics[mode]`` and all advantages into ``self._logs["advantages"]``.
- ``_compute_loss(model, inputs)`` obtains the policy log-probs from one call of
  ``_get_per_token_logps_and_entropies``, reads ``inputs["old_per_token_logps"]`` (present only when
  ``gradient_accumulation_steps % (steps_per_generation * num_iterations) != 0``), normalises the per-token
  loss per ``loss_type`` and logs ``entropy``. Its policy term (with ``beta * per_token_kl``) is positively
  homogeneous of degree 1 in ``(inputs["advantages"], self.beta)`` for every loss type, and ``grpo``, ``sapo``,
  ``luspo`` (a mean over rows) and ``dr_grpo`` (``per_token_loss.size(0)``) divide by the micro-batch's row count:
  see ``_masked_rows_scale``.
- ``_generate_single_turn(...)`` is the generation backend's call (Transformers, paged or vLLM) and returns
  ``(completion_ids, ...)`` with one list of token ids per completion; it is timed for ``GENERATION_SECONDS``.
- With ``dynamic_sampling``, the rounds' outputs are stacked row by row: ``_concat_rows`` knows the keys of TRL's
  text-only output and refuses any other (a new key fails loudly instead of being dropped). ``_prepare_inputs``
  shuffles and splits the merged batch with the extra 0-dim ``num_loss_rows_in_batch`` passed through unchanged, as
  it does ``num_items_in_batch``.

Reference model: with ``beta: 0`` (TRL's default) none is created. With ``beta > 0`` and full fine-tuning TRL
loads a second, frozen copy of the model; with a PEFT model TRL's reference is the same model with the
adapter disabled (the base model), so no copy is made.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer

from trl_gsm8k.advantages import group_advantages, zero_std_groups
from trl_gsm8k.config import GSM8KGRPOConfig
from trl_gsm8k.sampling import informative_groups, keep_groups, refill_indices

logger = logging.getLogger(__name__)

DYNAMIC_SAMPLING_STATE = "GSM8KDynamicSampling"  # key in TrainerState.stateful_callbacks

# Where a step's time goes, logged each step beside TRL's metrics (TRL's own profiling timings reach only wandb, mlflow
# and trackio, not trainer_state.json). Seconds are this process's: each process generates its own completions.
STEP_SECONDS = "timing/step_seconds"  # an optimizer step's wall time, from on_step_begin to on_step_end
GENERATION_SECONDS = "timing/generation_seconds"  # of it, in the generation backend (0 where a step reuses a buffer)
GENERATION_TOKENS_PER_SECOND = "generation/tokens_per_second"  # completion tokens this process generated per second

# TRL 1.16's loss types by what `GRPOTrainer._compute_loss` divides the summed per-token loss by. A row whose completion
# mask is all 0 adds nothing to a count of tokens, but still counts as a row (tests/test_sampling.py pins the lists
# against TRL's own). dynamic_sampling_fill: masked rescales the row-normalised ones (`_masked_rows_scale`).
ROW_NORMALISED_LOSSES = ("grpo", "sapo", "dr_grpo", "luspo")  # rows of the micro-batch: .mean() / .size(0)
TOKEN_NORMALISED_LOSSES = ("dapo", "bnpo", "cispo", "vespo")  # num_items_in_batch / the micro-batch's mask.sum()


class GSM8KGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` with `GSM8KGRPOConfig`'s advantage estimator, the optional KL to π_old, and the metrics
    `reward/mean`, `reward/std`, `advantage/mean`, `advantage/std`, `policy/entropy`, `frac_zero_std_groups` and
    `kl_old` (when kl_old_coef > 0). TRL's own metrics are kept; `accuracy` comes from the correctness reward
    (`trl_gsm8k.rewards.CorrectnessReward`), under this trainer or TRL's.

    With `beta: 0` there is no reference model (`ref_model is None`). With `beta > 0` and a PEFT model,
    TRL's reference is the adapter-disabled base model; with full fine-tuning it is a frozen copy.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        args_ = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(args_, GSM8KGRPOConfig):
            raise TypeError(f"GSM8KGRPOTrainer needs args=GSM8KGRPOConfig(...), got {type(args_).__name__}.")
        super().__init__(*args, **kwargs)
        self.kl_old_coef = self.args.kl_old_coef
        self._gathered_rewards_per_func: torch.Tensor | None = None
        self._capture_logps = False
        self._captured_logps: torch.Tensor | None = None
        self._warned_short_batch = False
        self._generation_seconds = 0.0  # in the optimizer step under way (_StepTimer reads and resets it)
        self.add_callback(_StepTimer(self))
        if self.args.dynamic_sampling:
            if self.args.dynamic_sampling_reward not in self.reward_func_names:
                raise ValueError(
                    f"dynamic_sampling_reward={self.args.dynamic_sampling_reward!r} is not one of the reward functions "
                    f"{self.reward_func_names}. Add it to reward_funcs (weight 0 in reward_weights if it should only "
                    "decide, not score), or name another one."
                )
            if isinstance(self.train_dataset, torch.utils.data.IterableDataset) or not hasattr(
                self.train_dataset, "__getitem__"
            ):
                raise ValueError("dynamic_sampling refills batches by index: it needs a map-style train_dataset, "
                                 f"got {type(self.train_dataset).__name__}.")
            if self.args.dynamic_sampling_fill == "masked" and self.loss_type not in (
                ROW_NORMALISED_LOSSES + TOKEN_NORMALISED_LOSSES
            ):
                raise ValueError(
                    f"dynamic_sampling_fill: masked cannot keep masked rows out of loss_type={self.loss_type!r}'s "
                    f"normalisation (known: {ROW_NORMALISED_LOSSES + TOKEN_NORMALISED_LOSSES}, trl 1.16.x): use one "
                    "of those, or dynamic_sampling_fill: trained."
                )

    # --- generation throughput ---------------------------------------------------------------------------------

    def _generate_single_turn(self, *args: Any, **kwargs: Any):
        """TRL's generation call (Transformers, paged or vLLM), timed: tokens per second and the step's share."""
        start = time.perf_counter()
        completion_ids, *rest = super()._generate_single_turn(*args, **kwargs)
        seconds = time.perf_counter() - start
        self._generation_seconds += seconds
        if self.model.training and seconds > 0:
            tokens = sum(len(ids) for ids in completion_ids)
            self._metrics["train"][GENERATION_TOKENS_PER_SECOND].append(tokens / seconds)
        return (completion_ids, *rest)

    # --- advantages -------------------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if self.args.dynamic_sampling and self.model.training:
            return self._generate_with_dynamic_sampling(inputs)
        return self._generate_and_score_round(inputs)

    def _generate_and_score_round(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._gathered_rewards_per_func = None
        output = super()._generate_and_score_completions(inputs)
        rewards_per_func = self._gathered_rewards_per_func
        num_local = len(inputs)
        expected = (num_local * self.accelerator.num_processes, len(self.reward_funcs))
        if rewards_per_func is None or tuple(rewards_per_func.shape) != expected:
            got = None if rewards_per_func is None else tuple(rewards_per_func.shape)
            raise RuntimeError(
                f"TRL internals changed: expected _calculate_rewards to return gathered rewards of shape {expected}, "
                f"got {got}. GSM8KGRPOTrainer is tested with trl 1.16.x."
            )
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval

        # Same reward TRL builds: weighted nansum over functions, NaN where every function returned None.
        rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan

        if self.args.advantage_estimator == "group_std":
            advantages = group_advantages(rewards, num_generations, eps=self.args.advantage_eps)
            start = self.accelerator.process_index * num_local  # TRL's process_slice
            output["advantages"] = advantages[start : start + num_local].to(output["advantages"].dtype)
            logged = self._logs["advantages"]  # TRL logged its own values for the completions table
            k = min(len(logged), advantages.numel())
            for _ in range(k):
                logged.pop()
            logged.extend(advantages[advantages.numel() - k :].tolist())
        else:
            advantages = self.accelerator.gather(output["advantages"])

        self._log_group_metrics(mode, rewards, advantages, num_generations)
        return output

    # --- dynamic sampling ----------------------------------------------------------------------------------------

    def _generate_with_dynamic_sampling(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Generate and score rounds of prompts, keeping only the groups with variance on the decision reward, until
        every process holds a full generation batch of them or max_sampling_rounds is reached.

        Every process runs the same rounds (each decides from the same gathered rewards), so the collectives inside
        a round always meet. A process that is still short after the last round fills its batch with dropped groups
        whose completions are masked out of the loss and of its normalisation (num_items_in_batch,
        num_loss_rows_in_batch): it trains on what it kept, as if the batch held nothing else.
        """
        G = self.num_generations
        num_processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        num_local = len(inputs)
        target = num_local // G
        column = self.reward_func_names.index(self.args.dynamic_sampling_reward)
        kept = torch.zeros(num_processes, dtype=torch.long)
        parts: list[tuple[dict[str, Any], torch.Tensor, bool]] = []  # (round output, local rows, masked out)
        batch, rounds = inputs, 0
        while True:
            rounds += 1
            output = self._generate_and_score_round(batch)
            decision = self._gathered_rewards_per_func[:, column].detach().float().cpu()
            informative = informative_groups(decision, G).view(num_processes, target)
            take = keep_groups(informative, kept, target)
            kept += take.sum(dim=1)
            parts.append((output, _group_rows(take[rank], G), False))
            if bool((kept >= target).all()) or rounds >= self.args.max_sampling_rounds:
                break
            batch = self._refill_batch(num_local)
        short = target - int(kept[rank])
        if short > 0:  # the last round's dropped groups keep the batch's shape
            dropped = (~take[rank]).nonzero().flatten().tolist()
            masked = self.args.dynamic_sampling_fill == "masked"
            if not masked:  # groups whose summed reward still varies (e.g. the format term) teach that much
                varies = output["advantages"].detach().view(target, G).ne(0).any(dim=1).cpu()
                dropped.sort(key=lambda g: not bool(varies[g]))
            filler_mask = torch.zeros(target, dtype=torch.bool)
            filler_mask[dropped[:short]] = True
            parts.append((output, _group_rows(filler_mask, G), masked))

        merged = _concat_rows(parts, self._tokenizer.pad_token_id)
        loss_mask = merged["completion_mask"] if "tool_mask" not in merged else merged["completion_mask"] * merged["tool_mask"]
        merged["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        # Rows in the loss, all processes: kept groups and trained filler, not masked filler (_masked_rows_scale).
        loss_rows = torch.tensor(sum(len(rows) for _, rows, masked in parts if not masked), device=loss_mask.device)
        merged["num_loss_rows_in_batch"] = self.accelerator.gather(loss_rows).sum()
        metrics = self._metrics["train"]
        metrics["sampling/rounds"].append(float(rounds))
        metrics["sampling/groups_generated"].append(float(rounds * num_processes * target))
        metrics["sampling/groups_kept"].append(float(kept.clamp(max=target).sum()))
        groups_short = int((target - kept).clamp(min=0).sum())
        metrics["sampling/groups_short"].append(float(groups_short))
        if groups_short and not self._warned_short_batch:
            self._warned_short_batch = True
            logger.warning(
                "dynamic sampling: after %d rounds, %d of %d groups of this batch had variance on %s; the rest of "
                "the batch is filled with dropped groups, %s (dynamic_sampling_fill, sampling/groups_short). Most "
                "groups teach nothing: raise max_sampling_rounds, num_generations or temperature, or train on easier "
                "problems (max_solution_steps).", rounds, int(kept.clamp(max=target).sum()), num_processes * target,
                self.args.dynamic_sampling_reward,
                "masked out of the loss" if self.args.dynamic_sampling_fill == "masked"
                else "trained on their summed-reward advantages",
            )
        return merged

    def _refill_batch(self, num_local: int) -> list[dict[str, Any]]:
        """This process's rows of the next refill round: the same global prompts on every process, each repeated
        num_generations times, laid out process-major like TRL's RepeatSampler."""
        G, num_processes = self.num_generations, self.accelerator.num_processes
        count = num_processes * num_local // G
        state = self.state.stateful_callbacks.setdefault(
            DYNAMIC_SAMPLING_STATE, {"args": {}, "attributes": {"refill_position": 0}}
        )  # saved in trainer_state.json with each checkpoint, so a resumed run continues the same sequence
        position = state["attributes"]["refill_position"]
        indices = refill_indices(position, count, len(self.train_dataset), self.args.seed, self.shuffle_dataset)
        state["attributes"]["refill_position"] = position + count
        rows = [self.train_dataset[i] for i in indices for _ in range(G)]
        start = self.accelerator.process_index * num_local
        return rows[start : start + num_local]

    def _log_group_metrics(self, mode, rewards, advantages, num_generations) -> None:
        metrics = self._metrics[mode]
        metrics["reward/mean"].append(metrics["reward"][-1])  # TRL: nanmean of the same weighted rewards
        metrics["reward/std"].append(metrics["reward_std"][-1])  # TRL: nanstd (sample std) of them
        zero_std = zero_std_groups(rewards, num_generations)
        metrics["frac_zero_std_groups"].append(zero_std.float().mean().item())
        scorable = ~torch.isnan(rewards)
        informative = scorable & ~zero_std.repeat_interleave(num_generations)
        metrics["advantage/mean"].append(advantages[scorable].mean().item() if scorable.any() else 0.0)
        # Over completions of groups with reward variance: ≈ 1 with group_std by construction.
        metrics["advantage/std"].append(
            advantages[informative].std(unbiased=False).item() if informative.any() else 0.0
        )

    # --- loss: KL to π_old and policy/entropy -------------------------------------------------------------

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any):
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._capture_logps:
            self._captured_logps = result[0]
        return result

    def _masked_rows_scale(self, inputs) -> float:
        """How much to scale the policy loss of a dynamically sampled batch so that masked filler rows count in
        neither the loss nor its normalisation: 1 unless rows are masked and the loss type divides by a row count.

        TRL 1.16 divides grpo/sapo/luspo (mean over rows) and dr_grpo (rows × max_completion_length) by the rows of
        the micro-batch, masked ones included, then by the accumulation steps. Like its num_items_in_batch for dapo,
        count the rows in the loss over the whole generation batch, all processes (K), in place of all its rows (N =
        rows of the micro-batch × processes × steps_per_generation): scale by N / K. Every kept row then weighs 1 / K
        in the accumulated, process-averaged gradient, as when the batch holds the kept rows alone, however TRL's
        shuffle spreads them over the micro-batches. With no masked rows N / K is exactly 1. Token-normalised types
        need nothing: masked rows have no tokens in completion_mask or in num_items_in_batch.
        """
        loss_rows = inputs.get("num_loss_rows_in_batch")
        if loss_rows is None or self.loss_type not in ROW_NORMALISED_LOSSES:
            return 1.0
        loss_rows = int(loss_rows)
        rows = inputs["advantages"].size(0) * self.accelerator.num_processes * self.args.steps_per_generation
        return rows / loss_rows if loss_rows else 1.0  # K = 0: every row is masked, the loss is 0 anyway

    def _compute_loss(self, model, inputs):
        scale = self._masked_rows_scale(inputs)
        if scale == 1.0:
            return self._compute_loss_and_kl_old(model, inputs)
        # Reach TRL's normaliser without copying _compute_loss (trl 1.16.x): its per-token policy loss (clipped or
        # CISPO-clamped ratio, SAPO's gate, VESPO's weights, the reference KL term) is scale × itself when advantages
        # and beta both are (scale > 0 keeps every sign test: clipping side, SAPO's temperature, VESPO's k/λ, the
        # off-policy mask), while the entropy bonus and aux loss, normalised on their own, are left as they are.
        beta = self.beta
        self.beta = beta * scale
        try:
            return self._compute_loss_and_kl_old(model, {**inputs, "advantages": inputs["advantages"] * scale})
        finally:
            self.beta = beta

    def _compute_loss_and_kl_old(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        if self.kl_old_coef == 0.0:
            loss = super()._compute_loss(model, inputs)
        else:
            self._capture_logps, self._captured_logps = True, None
            try:
                loss = super()._compute_loss(model, inputs)
            finally:
                self._capture_logps = False
            per_token_logps, self._captured_logps = self._captured_logps, None
            if per_token_logps is None:
                raise RuntimeError(
                    "TRL internals changed: _compute_loss did not call _get_per_token_logps_and_entropies. "
                    "GSM8KGRPOTrainer is tested with trl 1.16.x."
                )
            old = inputs.get("old_per_token_logps")
            old = per_token_logps.detach() if old is None else old  # TRL's convention: π_old = π_θ
            mask = inputs["completion_mask"]
            if "tool_mask" in inputs:
                mask = mask * inputs["tool_mask"]
            delta = old - per_token_logps
            per_token_kl = torch.exp(delta) - delta - 1  # k3 estimator, >= 0
            if self.args.use_bias_correction_kl:
                # As TRL does for its reference KL: tokens were sampled from π_old, so weighting k3 by
                # π_θ/π_old makes it an unbiased estimate of KL(π_θ || π_old) (and its gradient).
                log_ratio = -delta
                if self.importance_sampling_level == "sequence":
                    log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
                per_token_kl = per_token_kl * torch.exp(log_ratio)
            loss = loss + self.kl_old_coef * self._normalise_like_loss(per_token_kl, mask, inputs, mode)
            totals = self.accelerator.reduce(
                torch.stack([(per_token_kl.detach() * mask).sum(), mask.sum().float()]), reduction="sum"
            )
            self._metrics[mode]["kl_old"].append((totals[0] / totals[1].clamp(min=1.0)).item())
        self._metrics[mode]["policy/entropy"].append(self._metrics[mode]["entropy"][-1])
        return loss

    def _normalise_like_loss(self, per_token: torch.Tensor, mask: torch.Tensor, inputs, mode: str) -> torch.Tensor:
        """Aggregate a per-token term exactly as TRL 1.16's `_compute_loss` aggregates `per_token_loss`, so that
        adding the result equals adding the term to `per_token_loss` (as TRL does with `beta * per_token_kl`),
        rescaled as `_compute_loss` rescales TRL's for masked rows."""
        return self._aggregate_like_trl(per_token, mask, inputs, mode) * self._masked_rows_scale(inputs)

    def _aggregate_like_trl(self, per_token: torch.Tensor, mask: torch.Tensor, inputs, mode: str) -> torch.Tensor:
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        masked = per_token * mask
        if self.loss_type in ("grpo", "sapo"):
            return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
        if self.loss_type == "bnpo":
            return masked.sum() / mask.sum().clamp(min=1.0) / accumulation
        if self.loss_type == "dr_grpo":
            return masked.sum() / (per_token.size(0) * self.max_completion_length) / accumulation
        if self.loss_type in ("cispo", "dapo", "vespo"):
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
            return masked.sum() / normalizer
        if self.loss_type == "luspo":
            return masked.sum(-1).mean() / accumulation
        raise ValueError(f"kl_old_coef > 0 does not support loss_type={self.loss_type!r}.")


# --- merging the rounds of a dynamically sampled batch -------------------------------------------------------------

# Keys of TRL 1.16's text-only output and how their rows are padded when rounds of different widths are stacked.
_LEFT_PADDED = ("prompt_ids", "prompt_mask")
_RIGHT_PADDED = ("completion_ids", "completion_mask", "old_per_token_logps", "ref_per_token_logps", "tool_mask")
_MASKS = ("completion_mask", "tool_mask")


class _StepTimer(TrainerCallback):
    """Logs each optimizer step's wall time and the seconds of it spent generating (`STEP_SECONDS`,
    `GENERATION_SECONDS`): on_step_end runs before the Trainer logs, so both land in that step's log line."""

    def __init__(self, trainer: GSM8KGRPOTrainer) -> None:
        self.trainer = trainer
        self._start: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()
        self.trainer._generation_seconds = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is None:
            return
        metrics = self.trainer._metrics["train"]
        metrics[STEP_SECONDS].append(time.perf_counter() - self._start)
        metrics[GENERATION_SECONDS].append(self.trainer._generation_seconds)
        self._start = None


def _group_rows(groups: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Row indices of the selected groups (a boolean per group; the G rows of a group are consecutive)."""
    return (groups.nonzero().flatten().unsqueeze(1) * num_generations + torch.arange(num_generations)).flatten()


def _concat_rows(parts, pad_token_id: int) -> dict[str, Any]:
    """Stack the selected rows of each round's output; rows marked masked get completion/tool masks and
    advantages of 0, so they add nothing to the loss or to its token count."""
    keys = set(parts[0][0])
    unknown = keys - set(_LEFT_PADDED) - set(_RIGHT_PADDED) - {"advantages", "num_items_in_batch"}
    if unknown:
        raise ValueError(f"dynamic_sampling supports text-only batches; TRL returned {sorted(unknown)} as well.")
    merged: dict[str, Any] = {}
    for key in sorted(keys - {"num_items_in_batch"}):
        pieces = []
        for output, rows, masked in parts:
            piece = output[key][rows.to(output[key].device)]
            if masked and (key in _MASKS or key == "advantages"):
                piece = torch.zeros_like(piece)
            pieces.append(piece)
        if key == "advantages":
            merged[key] = torch.cat(pieces)
            continue
        width = max(p.size(1) for p in pieces)
        value = pad_token_id if key.endswith("_ids") else (1 if key == "tool_mask" else 0)
        left = key in _LEFT_PADDED
        merged[key] = torch.cat([
            torch.nn.functional.pad(p, (width - p.size(1), 0) if left else (0, width - p.size(1)), value=value)
            for p in pieces
        ])
    return merged
