"""Dynamic sampling (DAPO's, verl's ``filter_groups``): which groups to keep and where refill prompts come from.

Pure functions, no trainer. A group of G completions whose decision reward (by default the correctness reward) is
the same for every completion has advantage 0 and teaches nothing; the trainer drops such groups and refills the
batch with groups of further prompts. Filtering on a *shaped* sum would keep all-wrong groups alive through its small
format/length terms, so the decision reward is a single function's column.
"""

from __future__ import annotations

import torch

from .advantages import zero_std_groups


def informative_groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """One boolean per group: True where the group's rewards (NaN left out) are not all equal.

    >>> informative_groups(torch.tensor([1.0, 0.0, 0.0, 0.0, float("nan"), 1.0]), num_generations=2).tolist()
    [True, False, False]
    """
    return ~zero_std_groups(rewards, num_generations)


def keep_groups(informative: torch.Tensor, kept: torch.Tensor, target: int) -> torch.Tensor:
    """Which groups of this round each process keeps: its first ``target - kept[p]`` informative groups, in order.

    Args:
        informative: ``(num_processes, groups_per_process)`` booleans for this round, process-major (TRL's layout:
            process p holds groups ``[p * n, (p + 1) * n)`` of the gathered batch).
        kept: ``(num_processes,)`` groups each process has kept in earlier rounds.
        target: groups each process trains on per generation batch.

    Every process computes the same answer from the same gathered rewards, so all of them agree on when to stop.

    >>> informative = torch.tensor([[True, False, True], [False, True, True]])
    >>> keep_groups(informative, kept=torch.tensor([2, 0]), target=3).tolist()
    [[True, False, False], [False, True, True]]
    """
    if informative.dim() != 2 or kept.shape != (informative.shape[0],):
        raise ValueError(f"informative must be (processes, groups) and kept (processes,), got "
                         f"{tuple(informative.shape)} and {tuple(kept.shape)}.")
    rank = informative.long().cumsum(dim=1)  # 1-based position among this process's informative groups
    room = (target - kept).clamp(min=0).unsqueeze(1)
    return informative & (rank <= room)


def refill_indices(position: int, count: int, dataset_size: int, seed: int, shuffle: bool = True) -> list[int]:
    """Dataset indices of the refill prompts ``position .. position + count - 1`` of a run.

    Refill prompts come from their own pass over the train set, in a fixed order per pass (a permutation seeded by
    ``seed`` and the pass number, or the dataset's order with ``shuffle=False``), independent of the dataloader's
    order (TRL's sampler permutes with ``seed`` itself; the offset keeps the refill from replaying its sequence).
    The only state is ``position``, so a resumed run that restores it sees the same sequence.

    >>> refill_indices(3, 4, dataset_size=5, seed=0, shuffle=False)
    [3, 4, 0, 1]
    >>> refill_indices(0, 5, 5, seed=1) == refill_indices(0, 5, 5, seed=1) != refill_indices(5, 5, 5, seed=1)
    True
    """
    if dataset_size < 1:
        raise ValueError("dynamic sampling needs a non-empty train dataset to refill from.")
    out: list[int] = []
    while len(out) < count:
        cycle, offset = divmod(position + len(out), dataset_size)
        if shuffle:
            order = torch.randperm(dataset_size, generator=torch.Generator().manual_seed((seed + 1) * 1_000_003 + cycle))
        else:
            order = torch.arange(dataset_size)
        out.extend(order[offset : offset + count - len(out)].tolist())
    return out
