"""Group-relative advantage of GRPO, as the tutorial writes it (pure functions, no trainer).

For each group of G completions of one prompt: A_i = (r_i - mean) / (std + eps), with the population
standard deviation (1/G). TRL 1.16 instead divides by the sample std (1/(G-1)) plus 1e-4.
"""

from __future__ import annotations

import torch


def _grouped(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be a flat tensor of length N*G, got shape {tuple(rewards.shape)}.")
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}.")
    if rewards.numel() % num_generations != 0:
        raise ValueError(
            f"len(rewards) ({rewards.numel()}) is not divisible by num_generations ({num_generations}): "
            "rewards must hold whole groups of num_generations consecutive completions per prompt."
        )
    if not rewards.is_floating_point() or rewards.dtype in (torch.bfloat16, torch.float16):
        rewards = rewards.float()  # in bf16, (r - mean) / std would be 2^-8 off: standardise in fp32
    return rewards.view(-1, num_generations)


def zero_std_groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Boolean mask, one entry per group: True where the group's non-NaN rewards are all equal (or absent).

    >>> zero_std_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, float("nan"), 2.0]), num_generations=2).tolist()
    [True, False, True]
    """
    grouped = _grouped(rewards, num_generations)
    valid = ~torch.isnan(grouped)
    hi = torch.where(valid, grouped, -torch.inf).amax(dim=1)
    lo = torch.where(valid, grouped, torch.inf).amin(dim=1)
    return ~(hi > lo)  # exact comparison: rounding in (r - mean) must not turn an all-equal group into ±1


def group_advantages(rewards: torch.Tensor, num_generations: int, eps: float = 1e-8) -> torch.Tensor:
    """Per-group standardised rewards with the population std.

    Args:
        rewards: flat tensor of length N*G; the G completions of a prompt are consecutive (TRL's layout).
        num_generations: G, completions per prompt.
        eps: added to the std in the denominator.

    Returns:
        Advantages, same length as ``rewards``, in float32 (float64 for float64 rewards; bf16 and fp16 rewards are
        standardised in float32). A NaN reward (every reward function returned None) is left
        out of its group's mean and std and gets advantage 0; a group whose rewards are all equal gets 0.

    >>> nan = float("nan")
    >>> adv = group_advantages(torch.tensor([1.0, 0.0, nan, 3.0, 3.0, 3.0]), num_generations=3)
    >>> [round(a, 4) for a in adv.tolist()]
    [1.0, -1.0, 0.0, 0.0, 0.0, 0.0]
    >>> group_advantages(torch.ones(5), num_generations=2)
    Traceback (most recent call last):
    ...
    ValueError: len(rewards) (5) is not divisible by num_generations (2): ...
    """
    grouped = _grouped(rewards, num_generations)
    valid = ~torch.isnan(grouped)
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    mean = torch.where(valid, grouped, 0.0).sum(dim=1, keepdim=True) / count
    centered = torch.where(valid, grouped - mean, 0.0)
    std = (centered.square().sum(dim=1, keepdim=True) / count).sqrt()
    advantages = centered / (std + eps)
    advantages = torch.where(zero_std_groups(rewards, num_generations).unsqueeze(1), 0.0, advantages)
    return advantages.reshape(-1)
