import inspect
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer, TrlParser

from trl_gsm8k.advantages import group_advantages
from trl_gsm8k.rewards import CorrectnessReward, ShapedReward
from trl_gsm8k.trainer import GSM8KGRPOConfig, GSM8KGRPOTrainer

G = 4


def make_args(tmp_path, **overrides) -> GSM8KGRPOConfig:
    kwargs = dict(
        output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True, report_to="none", max_completion_length=8,
        num_generations=G, per_device_train_batch_size=G, max_steps=1, logging_steps=1, save_strategy="no",
        seed=0,
    )
    kwargs.update(overrides)
    return GSM8KGRPOConfig(**kwargs)


def make_dataset(n: int = 8) -> Dataset:
    return Dataset.from_dict(
        {"prompt": [f"What is {i} + 1?" for i in range(n)], "answer": [str(i + 1) for i in range(n)], "idx": list(range(n))}
    )


def position_reward(completions, **kwargs):
    """Content-independent: the completion's position in its group (single process)."""
    return [float(i % G) for i in range(len(completions))]


def first_of_group_reward(completions, idx, **kwargs):
    """1 for the first completion of each group."""
    return [1.0 if i % G == 0 else 0.0 for i in range(len(completions))]


def sometimes_none_reward(completions, idx, **kwargs):
    """None for the whole group of idx 0 and the 2nd completion of every group: unscorable rows."""
    return [None if (x == 0 or i % G == 1) else float(x % 3 + i % 2) for i, x in enumerate(idx)]


def observe_outputs(trainer) -> list:
    """Record what _generate_and_score_completions returns (observation only; the real method runs)."""
    seen, original = [], trainer._generate_and_score_completions

    def wrapped(inputs):
        output = original(inputs)
        seen.append((inputs, output, trainer._gathered_rewards_per_func.clone()))
        return output

    trainer._generate_and_score_completions = wrapped
    return seen


# --- configuration ---------------------------------------------------------------------------------------------


def test_config_rejects_bad_values_before_any_model(tmp_path):
    with pytest.raises(ValueError, match="advantage_estimator must be one of"):
        make_args(tmp_path, advantage_estimator="ppo")
    with pytest.raises(ValueError, match="kl_old_coef must be >= 0"):
        make_args(tmp_path, kl_old_coef=-0.1)
    with pytest.raises(ValueError, match="advantage_eps must be >= 0"):
        make_args(tmp_path, advantage_eps=-1.0)
    msg = r"identically zero\. Set num_iterations > 1 or steps_per_generation > gradient_accumulation_steps"
    with pytest.raises(ValueError, match=msg):
        make_args(tmp_path, kl_old_coef=0.1)
    with pytest.raises(ValueError, match=msg):  # reused, but within one optimizer step: still π_old = π_θ
        make_args(tmp_path, kl_old_coef=0.1, num_iterations=2, gradient_accumulation_steps=2, steps_per_generation=1)
    make_args(tmp_path, kl_old_coef=0.1, num_iterations=2, gradient_accumulation_steps=2, disable_dropout=True)
    make_args(tmp_path, kl_old_coef=0.1, num_iterations=2, disable_dropout=True)
    make_args(tmp_path, kl_old_coef=0.1, steps_per_generation=2, disable_dropout=True)
    with pytest.raises(ValueError, match="needs disable_dropout: true"):
        make_args(tmp_path, kl_old_coef=0.1, num_iterations=2)
    with pytest.raises(ValueError, match=r"generation_batch_size \(6\) must be divisible by num_generations \(4\)"
                       r".*per_device_train_batch_size \(6\) × processes \(1\) × steps_per_generation \(1\)"):
        make_args(tmp_path, per_device_train_batch_size=6)
    with pytest.raises(ValueError, match="only applies to advantage_estimator='trl'"):
        make_args(tmp_path, scale_rewards="batch")
    make_args(tmp_path, scale_rewards="batch", advantage_estimator="trl")


def test_config_fields_from_yaml_recipe(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"output_dir: {tmp_path / 'out'}\nbf16: false\nuse_cpu: true\nnum_generations: 4\n"
        "per_device_train_batch_size: 4\nadvantage_estimator: trl\nadvantage_eps: 1.0e-6\n"
        "kl_old_coef: 0.05\nnum_iterations: 2\ndisable_dropout: true\n"
    )
    (args,) = TrlParser((GSM8KGRPOConfig,)).parse_args_and_config(args=["--config", str(recipe)])
    assert isinstance(args, GSM8KGRPOConfig)
    assert (args.advantage_estimator, args.advantage_eps, args.kl_old_coef) == ("trl", 1e-6, 0.05)
    for name in ("advantage_estimator", "advantage_eps", "kl_old_coef"):
        assert GSM8KGRPOConfig.__dataclass_fields__[name].metadata["help"]


def test_trainer_needs_our_config(tiny_model_dir, tmp_path):
    args = GRPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, num_generations=G, per_device_train_batch_size=G)
    with pytest.raises(TypeError, match="GSM8KGRPOConfig"):
        GSM8KGRPOTrainer(model=tiny_model_dir, reward_funcs=[position_reward], args=args, train_dataset=make_dataset())


# --- TRL internals this package relies on ----------------------------------------------------------------------


def test_trl_internals_pinned():
    import trl

    assert trl.__version__.startswith("1.16."), f"GSM8KGRPOTrainer is tested with trl 1.16.x, found {trl.__version__}"
    expected = {
        "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
        "_generate_and_score_completions": ["self", "inputs"],
        "_compute_loss": ["self", "model", "inputs"],
        "_generate_single_turn": ["self", "prompt_ids", "images", "multimodal_fields", "num_generations",
                                  "has_tool_images"],
    }
    for name, params in expected.items():
        got = list(inspect.signature(getattr(GRPOTrainer, name)).parameters)
        assert got == params, f"TRL changed GRPOTrainer.{name}{got}; the overrides in trl_gsm8k/trainer.py assume {params}"
    logps_params = list(inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters)
    assert logps_params[:5] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep"]

    src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    for needle in (
        "rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)",
        "self.accelerator.process_index * len(prompts)",
        "(self.accelerator.process_index + 1) * len(prompts)",
        '"advantages": advantages,',
        'self._metrics[mode]["reward"].append(torch.nanmean(rewards).item())',
        'self._metrics[mode]["reward_std"].append(nanstd(rewards).item())',
        'self._logs["advantages"].extend(all_process_advantages.tolist())',
        "self.args.gradient_accumulation_steps % generate_every != 0",
    ):
        assert needle in src, f"TRL's _generate_and_score_completions changed (missing {needle!r}): re-check trainer.py"
    loss_src = inspect.getsource(GRPOTrainer._compute_loss)
    for needle in (
        'old_per_token_logps = inputs.get("old_per_token_logps")',
        "per_token_loss = per_token_loss + self.beta * per_token_kl",
        'self._metrics[mode]["entropy"].append(global_masked_mean(entropies))',
        'normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes',
    ):
        assert needle in loss_src, f"TRL's _compute_loss changed (missing {needle!r}): re-check trainer.py"
    assert loss_src.count("self._get_per_token_logps_and_entropies(") == 1


# --- real tiny runs ----------------------------------------------------------------------------------------------


def test_train_reference_free_metrics_and_advantages(tiny_model_dir, tmp_path):
    args = make_args(tmp_path, per_device_train_batch_size=2 * G, reward_weights=[1.0, 0.5, 2.0])
    trainer = GSM8KGRPOTrainer(
        model=tiny_model_dir, reward_funcs=[position_reward, first_of_group_reward, sometimes_none_reward],
        args=args, train_dataset=make_dataset(),
    )
    assert trainer.beta == 0.0 and trainer.ref_model is None
    seen = observe_outputs(trainer)
    trainer.train()

    (inputs, output, rewards_per_func), = seen
    assert rewards_per_func.shape == (2 * G, 3)  # gathered rewards stashed from _calculate_rewards
    rewards = (rewards_per_func * torch.tensor([1.0, 0.5, 2.0])).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    expected = group_advantages(rewards, G, eps=1e-8)
    torch.testing.assert_close(output["advantages"], expected)
    assert list(trainer._logs["advantages"]) == pytest.approx(expected.tolist())

    logs = trainer.state.log_history[0]
    assert math.isfinite(logs["loss"])
    for key in ("reward", "reward_std", "frac_reward_zero_std", "entropy"):  # TRL's own metrics are kept
        assert key in logs
    assert logs["reward/mean"] == logs["reward"] and logs["reward/std"] == logs["reward_std"]
    assert logs["policy/entropy"] == logs["entropy"]
    assert logs["frac_zero_std_groups"] == 0.0
    assert logs["advantage/mean"] == pytest.approx(0.0, abs=1e-6)
    assert logs["advantage/std"] == pytest.approx(1.0, abs=1e-5)


def test_each_step_logs_its_time_and_the_generation_throughput(tiny_model_dir, tmp_path):
    """steps_per_generation 2: step 1 generates both steps' completions in one call, step 2 trains on the buffer."""
    from trl_gsm8k.trainer import GENERATION_SECONDS, GENERATION_TOKENS_PER_SECOND, STEP_SECONDS

    args = make_args(tmp_path, max_steps=2, steps_per_generation=2, max_completion_length=16)
    trainer = GSM8KGRPOTrainer(model=tiny_model_dir, reward_funcs=[position_reward], args=args,
                               train_dataset=make_dataset())
    trainer.train()
    first, second = [h for h in trainer.state.log_history if "loss" in h]
    assert 0 < first[GENERATION_SECONDS] < first[STEP_SECONDS]
    assert second[GENERATION_SECONDS] == 0.0 and second[STEP_SECONDS] > 0
    assert GENERATION_TOKENS_PER_SECOND not in second  # nothing generated in step 2
    # One generate call of 2 micro-batches' completions: its tokens over its seconds.
    tokens = first["completions/mean_length"] * 2 * G
    assert first[GENERATION_TOKENS_PER_SECOND] * first[GENERATION_SECONDS] == pytest.approx(tokens, rel=1e-6)


class FirstOfGroupRight(CorrectnessReward):
    """The real correctness reward, scoring texts in which the first completion of each group declares the gold
    (a tiny random model writes nothing right)."""

    def __call__(self, completions, answer, **kwargs):
        texts = [f"#### {a}" if i % G == 0 else c for i, (c, a) in enumerate(zip(completions, answer))]
        return super().__call__(texts, answer, **kwargs)


@pytest.mark.parametrize("ours", [True, False], ids=["GSM8KGRPOTrainer", "GRPOTrainer"])
def test_accuracy_comes_from_the_correctness_reward_and_leaves_out_unreadable_golds(tiny_model_dir, tmp_path, ours):
    dataset = Dataset.from_dict({"prompt": ["What is 0 + 1?", "What is 1 + 1?"], "answer": ["no number", "2"]})
    kwargs = dict(output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True, report_to="none",
                  max_completion_length=8, num_generations=G, per_device_train_batch_size=2 * G, max_steps=1,
                  logging_steps=1, save_strategy="no", seed=0, shuffle_dataset=False)
    trainer_cls, config_cls = (GSM8KGRPOTrainer, GSM8KGRPOConfig) if ours else (GRPOTrainer, GRPOConfig)
    weighted = ShapedReward(correctness_weight=2.0)
    weighted.correctness = FirstOfGroupRight()
    weighted.__name__ = "renamed_and_weighted"
    trainer = trainer_cls(model=tiny_model_dir, reward_funcs=[weighted], args=config_cls(**kwargs),
                          train_dataset=dataset)
    trainer.train()
    assert trainer.state.log_history[0]["accuracy"] == pytest.approx(0.25)  # 1 of 4 graded, not 1 of 8


def test_unscorable_rows_and_all_equal_groups_get_zero(tiny_model_dir, tmp_path):
    def none_or_constant(completions, idx, **kwargs):
        # Every reward None for the 1st and 3rd completion of each group; the others all equal (per prompt).
        return [None if i % 2 == 0 else float(x) for i, x in enumerate(idx)]

    args = make_args(tmp_path, per_device_train_batch_size=2 * G, max_steps=2)
    trainer = GSM8KGRPOTrainer(model=tiny_model_dir, reward_funcs=[none_or_constant], args=args, train_dataset=make_dataset())
    seen = observe_outputs(trainer)
    trainer.train()
    for _, output, rewards_per_func in seen:
        assert torch.isnan(rewards_per_func).any()
        assert torch.all(output["advantages"] == 0)
    for logs in trainer.state.log_history[:-1]:
        assert math.isfinite(logs["loss"]) and logs["frac_zero_std_groups"] == 1.0
        assert "accuracy" not in logs  # no correctness reward among the reward functions


def test_trl_estimator_keeps_trl_advantages(tiny_model_dir, tmp_path):
    args = make_args(tmp_path, advantage_estimator="trl")
    trainer = GSM8KGRPOTrainer(model=tiny_model_dir, reward_funcs=[position_reward], args=args, train_dataset=make_dataset())
    seen = observe_outputs(trainer)
    trainer.train()
    (_, output, rewards_per_func), = seen
    r = rewards_per_func[:, 0].view(-1, G)
    trl_adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)  # sample std, 1e-4
    torch.testing.assert_close(output["advantages"], trl_adv)
    assert trainer.state.log_history[0]["advantage/std"] == pytest.approx(math.sqrt((G - 1) / G), abs=1e-3)


def test_kl_old_zero_on_first_update_positive_on_reuse(tiny_model_dir, tmp_path):
    args = make_args(tmp_path, num_iterations=2, kl_old_coef=0.1, max_steps=2, learning_rate=1e-2, disable_dropout=True)
    trainer = GSM8KGRPOTrainer(model=tiny_model_dir, reward_funcs=[position_reward], args=args, train_dataset=make_dataset())
    trainer.train()
    first, second = trainer.state.log_history[:2]
    assert first["kl_old"] < 1e-7
    assert second["kl_old"] > 1e-4
    assert math.isfinite(first["loss"]) and math.isfinite(second["loss"])


@pytest.mark.parametrize(
    "loss_type,bias_correction,level",
    [("dapo", True, "token"), ("grpo", True, "token"), ("bnpo", True, "token"), ("dr_grpo", True, "token"),
     ("dapo", False, "token"), ("dapo", True, "sequence")],
)
def test_kl_old_normalised_like_trl_beta_term(tiny_model_dir, tmp_path, loss_type, bias_correction, level):
    """coef · KL(π_θ‖π_old) must enter the loss exactly as TRL adds beta · KL(π_θ‖π_ref): use TRL's own
    beta path, with π_ref := π_old, as the reference."""
    args = make_args(tmp_path, num_iterations=2, kl_old_coef=0.3, loss_type=loss_type, disable_dropout=True,
                     use_bias_correction_kl=bias_correction, importance_sampling_level=level)
    trainer = GSM8KGRPOTrainer(model=tiny_model_dir, reward_funcs=[position_reward], args=args, train_dataset=make_dataset())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2  # set by Trainer's loop; 2 exercises the normalisers
    rows = [row for row in make_dataset(2) for _ in range(G)]
    inputs = trainer._generate_and_score_completions(rows)
    torch.manual_seed(0)
    inputs["old_per_token_logps"] = inputs["old_per_token_logps"] + 0.2 * torch.randn_like(inputs["old_per_token_logps"])

    ours = trainer._compute_loss(trainer.model, inputs)
    trainer.kl_old_coef, trainer.beta = 0.0, 0.3
    reference = trainer._compute_loss(trainer.model, {**inputs, "ref_per_token_logps": inputs["old_per_token_logps"]})
    torch.testing.assert_close(ours, reference)
    assert trainer._metrics["train"]["kl_old"][-1] == pytest.approx(trainer._metrics["train"]["kl"][-1], rel=1e-5)


# --- two processes (gloo) give the single-process advantages --------------------------------------------------

DIST_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from datasets import Dataset
    from trl_gsm8k.trainer import GSM8KGRPOConfig, GSM8KGRPOTrainer

    model_dir, out_dir, per_device = sys.argv[1], sys.argv[2], int(sys.argv[3])
    bf16 = sys.argv[4:] == ["bf16"]  # the GPU recipes' precision (emulated on a CPU without native bf16)
    G = 4
    rank = int(os.environ.get("RANK", 0))

    def position(local_i, n_local):  # position in the group, from TRL's process-major layout
        return (rank * n_local + local_i) % G

    def table(idx, pos):  # deterministic, content-independent; idx 0: all equal; idx 1, pos 2: unscorable
        if idx == 0:
            return 1.0, 1.0
        if idx == 1 and pos == 2:
            return None, None
        return float((idx * 7 + pos * 3) % 5), (None if pos == 1 else float(idx % 2))

    def reward_a(completions, idx, **kw):
        return [table(x, position(i, len(idx)))[0] for i, x in enumerate(idx)]

    def reward_b(completions, idx, **kw):
        return [table(x, position(i, len(idx)))[1] for i, x in enumerate(idx)]

    ds = Dataset.from_dict({"prompt": [f"Q{i}: what is {i} + {i}?" for i in range(12)], "idx": list(range(12))})
    args = GSM8KGRPOConfig(
        output_dir=os.path.join(out_dir, "run"), bf16=bf16, allow_emulated_bf16=bf16, use_cpu=True, report_to="none",
        max_completion_length=4, num_generations=G, per_device_train_batch_size=per_device, max_steps=1,
        save_strategy="no", seed=0, reward_weights=[1.0, 0.5],
    )
    trainer = GSM8KGRPOTrainer(model=model_dir, reward_funcs=[reward_a, reward_b], args=args, train_dataset=ds)
    assert trainer.accelerator.native_amp == bf16, "bf16 asked, but no autocast"
    records, original = [], trainer._generate_and_score_completions

    def observed(inputs):
        output = original(inputs)
        for i, (row, adv) in enumerate(zip(inputs, output["advantages"].tolist())):
            records.append([row["idx"], position(i, len(inputs)), adv])
        return output

    trainer._generate_and_score_completions = observed
    trainer.train()
    with open(os.path.join(out_dir, f"advantages_{trainer.accelerator.num_processes}_{rank}.json"), "w") as f:
        json.dump(records, f)
    # Destroy the process group before exit, as accelerate asks, then leave without the interpreter's teardown: in it,
    # a C++ thread still sometimes aborts a rank ("terminate called without an active exception", seen in 2 of ~4 CI
    # runs even after end_training) once all the work above is written; this script checks advantages, not teardown.
    trainer.accelerator.end_training()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
    """
)


def _expected_from_table(keys) -> dict:
    def table(idx, pos):
        if idx == 0:
            return 1.0, 1.0
        if idx == 1 and pos == 2:
            return math.nan, math.nan
        return float((idx * 7 + pos * 3) % 5), (math.nan if pos == 1 else float(idx % 2))

    expected = {}
    for idx in sorted({k[0] for k in keys}):
        pairs = torch.tensor([table(idx, p) for p in range(G)])
        r = (pairs * torch.tensor([1.0, 0.5])).nansum(dim=1)
        r[torch.isnan(pairs).all(dim=1)] = math.nan
        for pos, a in enumerate(group_advantages(r, G).tolist()):
            expected[(idx, pos)] = a
    return expected


def test_two_processes_match_single_process(tiny_model_dir, tmp_path):
    script = tmp_path / "dist_advantages.py"
    script.write_text(DIST_SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # 12 completions per generation batch = 3 groups; with 2 processes × 6, the middle group straddles them.
    subprocess.run([sys.executable, str(script), tiny_model_dir, str(tmp_path), "12"], env=env, check=True,
                   capture_output=True, timeout=300)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # The two processes in bf16 (autocast, as the GPU recipes run), the single process in fp32: the advantages
    # depend on neither.
    result = subprocess.run(torchrun + [str(script), tiny_model_dir, str(tmp_path), "6", "bf16"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    def load(name):
        return {(i, p): a for i, p, a in json.loads((tmp_path / name).read_text())}

    single = load("advantages_1_0.json")
    multi = {**load("advantages_2_0.json"), **load("advantages_2_1.json")}
    assert len(single) == 12 and multi.keys() == single.keys()
    for key in single:
        assert multi[key] == pytest.approx(single[key], abs=1e-6), key
    expected = _expected_from_table(single.keys())
    assert single == pytest.approx({k: expected[k] for k in single}, abs=1e-6)


# --- trl_gsm8k.models -----------------------------------------------------------------------------------------


def test_resolve_model_path(tmp_path, monkeypatch):
    from trl_gsm8k.models import resolve_model_path

    local = tmp_path / "some" / "dir"
    local.mkdir(parents=True)
    assert resolve_model_path(str(local)) == str(local)  # a local directory as given (Hub ids: tests/test_offline.py)
    monkeypatch.setenv("TRL_GSM8K_CACHE", str(tmp_path))
    cached = tmp_path / "smollm2-135m-instruct"
    cached.mkdir()
    (cached / "config.json").write_text("{}")  # a finished conversion: reused, not redone
    assert resolve_model_path("SmolLM2-135M-Instruct") == str(cached)


KL_OLD_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "r1-distill-qwen-1.5b_lora_kl-old_zero2-offload.yaml"


def _kl_old_after_one_pass(tiny_model_dir, tmp_path, dropout_p: float | None) -> float:
    """The shipped kl-old recipe (LoRA dropout, batch reuse) on the tiny model: generate a batch, then the loss pass
    at π_θ = π_old. dropout_p re-enables the LoRA dropout modules (None: as the recipe leaves them)."""
    from trl import get_peft_config

    from trl_gsm8k.config import make_parser

    _, args, model_args = make_parser().parse_args_and_config(args=[
        "--config", str(KL_OLD_RECIPE), "--bf16", "false", "--use_cpu", "true", "--output_dir", str(tmp_path / "o"),
        "--max_completion_length", "12", "--activation_checkpointing", "false", "--model_name_or_path", tiny_model_dir,
        "--reward_weights", "1.0",
    ])
    assert model_args.lora_dropout > 0 and args.kl_old_coef > 0 and args.num_iterations > 1
    torch.manual_seed(0)
    trainer = GSM8KGRPOTrainer(model=tiny_model_dir, reward_funcs=[position_reward], args=args,
                               train_dataset=make_dataset(), peft_config=get_peft_config(model_args))
    dropouts = [m for name, m in trainer.model.named_modules() if "lora_dropout" in name and isinstance(m, torch.nn.Dropout)]
    assert dropouts, "the recipe's LoRA dropout modules are missing: the test would check nothing"
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:  # a trained adapter: with B = 0 (its init) dropout on the LoRA path changes nothing
            param.data.normal_(0, 0.5)
    if dropout_p is not None:
        for module in dropouts:
            module.p = dropout_p
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps
    rows = [row for row in make_dataset(args.generation_batch_size // G) for _ in range(G)]
    inputs = trainer._generate_and_score_completions(rows)
    assert "old_per_token_logps" in inputs  # π_old's log-probs computed in train mode, as in training
    first = {k: (v[: args.per_device_train_batch_size] if isinstance(v, torch.Tensor) and v.dim() else v)
             for k, v in inputs.items()}
    trainer._compute_loss(trainer.model, first)
    return trainer._metrics["train"]["kl_old"][-1]


def test_kl_old_is_exactly_zero_at_pi_old_with_the_recipes_lora_dropout(tiny_model_dir, tmp_path):
    assert _kl_old_after_one_pass(tiny_model_dir, tmp_path, None) == 0.0
    # The same pass with the recipe's dropout left active: different masks, a spurious KL (what the config forbids).
    assert _kl_old_after_one_pass(tiny_model_dir, tmp_path, 0.05) > 1e-4
