"""The GPU recipes' precision path (bf16 compute, fp32 master weights) on the CPU, on any CPU: where bf16 is not native
it is emulated (`allow_emulated_bf16`), slower but numerically the same. Tiny models keep it cheap.

The reference for every bf16 run is the same run in fp32. Tolerance: bf16 keeps 8 significant bits (unit roundoff
u = 2^-8 ≈ 0.4 %); through a 2-layer model's forward and backward the gradients come out ~1 % off (measured 0.8 % with
autocast, 2.5 % with DeepSpeed's bf16 module), and Adam's update inherits that. So a bf16 run's weight update must
match fp32's within 10 % in L2 (25 u). An update lost to bf16 rounding (bf16 weights with no fp32 master) is 70-90 %
off at these learning rates (measured), and a wrong dtype in an override is worse.
"""

import math

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from trl_gsm8k.advantages import group_advantages
from trl_gsm8k.trainer import GSM8KGRPOConfig, GSM8KGRPOTrainer, _concat_rows

G = 4
UPDATE_RTOL = 0.1  # relative L2 difference of weight updates, bf16 vs fp32 (see the module docstring)


def position_reward(completions, **kwargs):
    """Content-independent, with variance in every group: the same advantages whatever the precision samples."""
    return [float(i % G) for i in range(len(completions))]


def make_dataset(n: int = 8) -> Dataset:
    return Dataset.from_dict({"prompt": [f"What is {i} + 1?" for i in range(n)], "idx": list(range(n))})


def make_args(tmp_path, bf16: bool, **overrides) -> GSM8KGRPOConfig:
    kwargs = dict(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", max_completion_length=6, num_generations=G,
        per_device_train_batch_size=G, max_steps=3, logging_steps=1, save_strategy="no", seed=0,
        lr_scheduler_type="constant", bf16=bf16, allow_emulated_bf16=bf16,
    )
    kwargs.update(overrides)
    return GSM8KGRPOConfig(**kwargs)


def train(model_dir, args, **kwargs) -> GSM8KGRPOTrainer:
    trainer = GSM8KGRPOTrainer(model=model_dir, reward_funcs=[position_reward], args=args,
                               train_dataset=make_dataset(), **kwargs)
    trainer.train()
    return trainer


def relative_update_error(start: dict, ours: dict, reference_start: dict, reference: dict) -> float:
    """‖(ours − start) − (reference − reference_start)‖ / ‖reference − reference_start‖ over all tensors."""
    num = den = 0.0
    for key, ref in reference.items():
        expected = ref.float() - reference_start[key].float()
        num += float((ours[key].float() - start[key].float() - expected).square().sum())
        den += float(expected.square().sum())
    assert den > 0, "the reference did not move: the comparison would be empty"
    return math.sqrt(num / den)


def bf16_spacing(weights: torch.Tensor) -> torch.Tensor:
    """The distance from each weight's bf16 value to the next bf16 number away from zero."""
    rounded = weights.to(torch.bfloat16)
    return (torch.nextafter(rounded, torch.full_like(rounded, math.inf) * rounded.sign()) - rounded).abs().float()


def test_autocast_bf16_keeps_fp32_master_weights_at_the_demos_learning_rate(tiny_model_dir, tmp_path):
    """Without DeepSpeed, bf16 is Accelerate's CPU autocast around fp32 weights: 3 optimizer steps at lr 1e-5 (the CPU
    demo's) move the weights as in fp32, although one step is below half the bf16 spacing of most of them."""
    lr = 1e-5
    initial = load_file(f"{tiny_model_dir}/model.safetensors")
    weights = torch.cat([w.flatten() for w in initial.values()])
    assert (lr < bf16_spacing(weights) / 2).float().mean() > 0.8  # in bf16 weights these updates would round away

    fp32 = train(tiny_model_dir, make_args(tmp_path / "fp32", bf16=False, learning_rate=lr))
    bf16 = train(tiny_model_dir, make_args(tmp_path / "bf16", bf16=True, learning_rate=lr))
    assert bf16.accelerator.native_amp and bf16.args.bf16 and bf16.args.use_cpu  # autocast on the CPU
    assert not fp32.accelerator.native_amp
    assert {p.dtype for p in bf16.model.parameters()} == {torch.float32}  # the optimizer's weights stay fp32
    logs = [(h["num_tokens"], h["reward"]) for h in bf16.state.log_history if "loss" in h]
    assert logs == [(h["num_tokens"], h["reward"]) for h in fp32.state.log_history if "loss" in h]
    assert len(logs) == 3

    ours, reference = bf16.model.state_dict(), fp32.model.state_dict()
    error = relative_update_error(initial, ours, initial, reference)
    assert error < UPDATE_RTOL, f"bf16 update differs from fp32's by {error:.1%}"
    moved = torch.cat([(reference[k] - initial[k]).flatten() for k in initial]).abs()
    assert lr < moved.max() <= 3.5 * lr  # Adam: at most ~lr per element and step


def bf16_exact_model_dir(model_dir, path):
    """The tiny model with weights rounded to bf16 and saved in fp32: loaded in bf16 or fp32, the same numbers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(path)
    return str(path)


def test_lora_adapters_next_to_a_bf16_base(tiny_model_dir, tmp_path):
    """The GPU LoRA recipes load the base in bf16: the adapters stay fp32 (PEFT), the frozen base stays bf16, and 3
    steps at the tutorial's lr 5e-5 move the adapters as an fp32 run on the same base numbers does."""
    from peft import LoraConfig

    model_dir = bf16_exact_model_dir(tiny_model_dir, tmp_path / "model")
    lora = dict(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0,
                task_type="CAUSAL_LM")  # the recipes' modules; dropout off so both runs see the same network
    runs = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        args = make_args(tmp_path / name, bf16=bf16, learning_rate=5e-5,
                         model_init_kwargs={"dtype": torch.bfloat16 if bf16 else torch.float32})
        trainer = GSM8KGRPOTrainer(model=model_dir, reward_funcs=[position_reward], args=args,
                                   train_dataset=make_dataset(), peft_config=LoraConfig(**lora))
        before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        trainer.train()
        runs[name] = trainer, before
    trainer, before = runs["bf16"]
    params = dict(trainer.model.named_parameters())
    adapters = {k for k, p in params.items() if p.requires_grad}
    assert adapters and all("lora_" in k for k in adapters)
    assert {params[k].dtype for k in adapters} == {torch.float32}
    assert {p.dtype for k, p in params.items() if k not in adapters} == {torch.bfloat16}
    assert all(torch.equal(params[k], before[k]) for k in params if k not in adapters)  # the base is frozen
    reference, reference_before = runs["fp32"]
    reference_params = dict(reference.model.named_parameters())

    def effective(weights):  # each adapted projection's weight change B·A (B starts at 0)
        return {k: weights[k.replace("lora_A", "lora_B")].float() @ weights[k].float() for k in adapters if "lora_A" in k}

    zero = {k: torch.zeros_like(v) for k, v in effective(params).items()}
    error = relative_update_error(zero, effective(params), zero, effective(reference_params))
    assert error < UPDATE_RTOL, f"bf16-base LoRA's weight change B·A differs from fp32's by {error:.1%}"
    # Adam's first updates are ≈ ±lr per element: bf16 may flip only those whose gradient is within its noise
    # (measured 0.6 %); an update lost to rounding (an adapter left in bf16) would agree nowhere.
    for kind in ("lora_A", "lora_B"):
        ours = torch.cat([(params[k] - before[k]).flatten() for k in adapters if kind in k])
        theirs = torch.cat([(reference_params[k] - reference_before[k]).flatten() for k in adapters if kind in k])
        agree = (ours.sign() == theirs.sign())[theirs != 0].float().mean()
        assert agree > 0.98, f"{kind}: the bf16 run's update has the fp32 run's sign on {agree:.1%} of elements"


def test_overrides_meet_a_bf16_module(tiny_model_dir, tmp_path):
    """The module in bf16, as DeepSpeed's bf16 engine holds it: the group advantage and the reward → advantage dtype,
    and the KL to π_old (its k3 estimator exp(δ) − δ − 1 cancels catastrophically in bf16: TRL's log-probs must reach
    it in fp32, and they do)."""
    args = make_args(tmp_path, bf16=True, num_iterations=2, kl_old_coef=0.1, disable_dropout=True,
                     per_device_train_batch_size=2 * G, max_steps=1)
    trainer = GSM8KGRPOTrainer(model=tiny_model_dir, reward_funcs=[position_reward], args=args,
                               train_dataset=make_dataset())
    trainer.model.to(torch.bfloat16)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    rows = [row for row in make_dataset(2) for _ in range(G)]
    inputs = trainer._generate_and_score_completions(rows)
    rewards = trainer._gathered_rewards_per_func[:, 0]
    assert rewards.dtype == inputs["advantages"].dtype == torch.float32
    torch.testing.assert_close(inputs["advantages"], group_advantages(rewards, G), rtol=0, atol=0)
    assert inputs["old_per_token_logps"].dtype == torch.float32

    trainer._compute_loss(trainer.model, inputs)  # π_θ = π_old: the KL is exactly 0, not bf16 noise
    assert trainer._metrics["train"]["kl_old"][-1] == 0.0
    torch.manual_seed(0)
    inputs["old_per_token_logps"] = inputs["old_per_token_logps"] + 0.2 * torch.randn_like(inputs["old_per_token_logps"])
    ours = trainer._compute_loss(trainer.model, inputs)
    trainer.kl_old_coef, trainer.beta = 0.0, 0.1  # TRL's own reference-KL path, with π_ref := π_old
    reference = trainer._compute_loss(trainer.model, {**inputs, "ref_per_token_logps": inputs["old_per_token_logps"]})
    assert ours.dtype == reference.dtype == torch.float32
    torch.testing.assert_close(ours, reference)
    assert trainer._metrics["train"]["kl_old"][-1] == pytest.approx(trainer._metrics["train"]["kl"][-1], rel=1e-5)


def test_dynamic_sampling_merge_keeps_bf16_rows_exact():
    """Rounds merged row by row keep each tensor's dtype and values (bf16 log-probs padded, not upcast or rounded);
    masked filler rows are exact zeros."""
    def round_output(width, seed):
        gen = torch.Generator().manual_seed(seed)
        return {
            "prompt_ids": torch.randint(5, 50, (2 * G, 3), generator=gen), "prompt_mask": torch.ones(2 * G, 3, dtype=torch.long),
            "completion_ids": torch.randint(5, 50, (2 * G, width), generator=gen),
            "completion_mask": torch.ones(2 * G, width, dtype=torch.long),
            "old_per_token_logps": (-torch.rand(2 * G, width, generator=gen) * 5).to(torch.bfloat16),
            "advantages": torch.randn(2 * G, generator=gen),
        }

    first, second = round_output(5, 0), round_output(7, 1)
    kept, filler = torch.arange(G), torch.arange(G, 2 * G)
    merged = _concat_rows([(first, kept, False), (second, filler, True)], pad_token_id=0)
    assert merged["old_per_token_logps"].dtype == torch.bfloat16 and merged["advantages"].dtype == torch.float32
    assert torch.equal(merged["old_per_token_logps"][:G, :5], first["old_per_token_logps"][:G])
    assert torch.equal(merged["old_per_token_logps"][G:], second["old_per_token_logps"][G:])
    assert not merged["old_per_token_logps"][:G, 5:].any()  # padding
    assert torch.equal(merged["advantages"][:G], first["advantages"][:G]) and not merged["advantages"][G:].any()
    assert not merged["completion_mask"][G:].any()
