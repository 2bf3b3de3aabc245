import numpy as np
import pytest
import torch

from trl_gsm8k.advantages import group_advantages, zero_std_groups


def reference(rewards: np.ndarray, g: int, eps: float) -> np.ndarray:
    out = np.zeros_like(rewards, dtype=np.float64)
    for start in range(0, len(rewards), g):
        r = rewards[start : start + g]
        valid = ~np.isnan(r)
        if valid.sum() == 0 or np.all(r[valid] == r[valid][0]):
            continue
        mean, std = r[valid].mean(), r[valid].std(ddof=0)
        out[start : start + g][valid] = (r[valid] - mean) / (std + eps)
    return out


@pytest.mark.parametrize("g", [2, 4, 8])
@pytest.mark.parametrize("seed", range(5))
def test_matches_numpy_reference(g, seed):
    rng = np.random.default_rng(seed)
    n = 16
    rewards = rng.choice([0.0, 0.5, 1.0, 2.0], size=n * g) + rng.normal(0, 0.1, size=n * g) * (seed % 2)
    rewards[rng.random(n * g) < 0.2] = np.nan  # unscorable completions
    rewards[:g] = 1.0  # a zero-variance group
    rewards[g : 2 * g] = np.nan  # an all-NaN group
    rewards[2 * g] = 3.0
    rewards[2 * g + 1 : 3 * g] = np.nan  # a single valid reward
    got = group_advantages(torch.tensor(rewards), g, eps=1e-8).numpy()
    np.testing.assert_allclose(got, reference(rewards, g, 1e-8), rtol=1e-10, atol=1e-10)
    assert not np.isnan(got).any()
    assert np.all(got[np.isnan(rewards)] == 0)


def test_float32_and_int_inputs():
    r = torch.tensor([1, 0, 2, 2], dtype=torch.int64)
    assert group_advantages(r, 2).tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0], abs=1e-6)
    r32 = torch.rand(64)
    np.testing.assert_allclose(group_advantages(r32, 8).numpy(), reference(r32.double().numpy(), 8, 1e-8), atol=1e-5)


def test_population_std_not_sample_std():
    # G=2, rewards (1, 0): population std 0.5 -> ±1; TRL's sample std 0.707 would give ±0.707.
    assert group_advantages(torch.tensor([1.0, 0.0]), 2).tolist() == pytest.approx([1.0, -1.0], abs=1e-6)


def test_all_equal_groups_are_exactly_zero():
    r = torch.tensor([0.1] * 3 + [0.7] * 3, dtype=torch.float64)  # rounding in (r - mean) must not leak through
    assert group_advantages(r, 3).tolist() == [0.0] * 6
    assert zero_std_groups(r, 3).tolist() == [True, True]


def test_nan_rows_get_zero_and_are_left_out():
    nan = float("nan")
    adv = group_advantages(torch.tensor([nan, 2.0, 0.0, nan]), 4)
    assert adv.tolist() == pytest.approx([0.0, 1.0, -1.0, 0.0], abs=1e-6)
    assert group_advantages(torch.full((4,), nan), 2).tolist() == [0.0] * 4


@pytest.mark.parametrize("n,g", [(5, 2), (7, 4), (3, 8)])
def test_not_divisible_raises(n, g):
    with pytest.raises(ValueError, match="not divisible by num_generations"):
        group_advantages(torch.zeros(n), g)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="flat"):
        group_advantages(torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match=">= 1"):
        group_advantages(torch.zeros(4), 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_rewards_get_float32_advantages(dtype):
    """Rewards that arrive in bf16 (a reward model's logits under the GPU recipes' precision) are standardised in
    fp32: in bf16, (r - mean) / std carries bf16's 2^-8 relative error into every advantage, and into the loss."""
    rng = np.random.default_rng(0)
    rewards = torch.tensor(rng.choice([0.0, 0.25, 0.5, 1.0], size=64) + rng.normal(0, 0.01, size=64))
    low = rewards.to(dtype)  # the rewards as they arrive: rounded once, then exact
    adv = group_advantages(low, num_generations=8)
    assert adv.dtype == torch.float32
    expected = torch.tensor(reference(low.double().numpy(), 8, 1e-8), dtype=torch.float32)
    torch.testing.assert_close(adv, expected, rtol=1e-5, atol=1e-5)
