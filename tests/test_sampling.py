"""Dynamic sampling: the filter's decisions, refill order, real tiny runs (accumulation, reuse, resume, 2 processes,
the ZeRO-2 offload launch), and the gradient of a short batch with masked filler, per TRL loss type."""

import inspect
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from trl_gsm8k.sampling import informative_groups, keep_groups, refill_indices
from trl_gsm8k.trainer import (
    DYNAMIC_SAMPLING_STATE, ROW_NORMALISED_LOSSES, TOKEN_NORMALISED_LOSSES, GSM8KGRPOConfig, GSM8KGRPOTrainer,
)

ROOT = Path(__file__).resolve().parent.parent
G = 4


def informative_idx(idx: int) -> bool:
    """The test's ground truth: prompts whose idx is a multiple of 3 get one right completion in G."""
    return idx % 3 == 0


def correctness_reward(completions, idx, **kwargs):
    """Content-independent; named like the real correctness reward so that it is the default decision reward."""
    return [1.0 if informative_idx(x) and i % G == 0 else 0.0 for i, x in enumerate(idx)]


def never_right(completions, idx, **kwargs):
    return [0.0] * len(idx)


def position_reward(completions, **kwargs):
    """Variance in every group: what a shaped sum does to all-wrong groups, and what the filter must ignore."""
    return [float(i % G) for i in range(len(completions))]


def make_dataset(n: int = 24) -> Dataset:
    return Dataset.from_dict({"prompt": [f"What is {i} + 1?" for i in range(n)], "idx": list(range(n))})


def make_args(tmp_path, **overrides) -> GSM8KGRPOConfig:
    kwargs = dict(
        output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True, report_to="none", max_completion_length=6,
        num_generations=G, per_device_train_batch_size=2 * G, max_steps=2, logging_steps=1, save_strategy="no",
        seed=0, dynamic_sampling=True, max_sampling_rounds=4, reward_weights=[1.0, 0.1],
    )
    kwargs.update(overrides)
    return GSM8KGRPOConfig(**kwargs)


def record_rounds(trainer) -> list:
    """Observation only: each generation round's prompt idx and output, and each merged batch."""
    rounds, merged, round_fn, batch_fn = [], [], trainer._generate_and_score_round, trainer._generate_and_score_completions

    def observed_round(inputs):
        output = round_fn(inputs)
        rounds.append(([row["idx"] for row in inputs], output))
        return output

    def observed_batch(inputs):
        start = len(rounds)
        output = batch_fn(inputs)
        merged.append((rounds[start:], output))
        return output

    trainer._generate_and_score_round = observed_round
    trainer._generate_and_score_completions = observed_batch
    return merged


def rows_of(output, key, i) -> list[int]:
    mask = output["prompt_mask" if key == "prompt_ids" else "completion_mask"][i].bool()
    return output[key][i][mask].tolist()


def expected_selection(rounds, target) -> list[tuple[int, int]]:
    """(round, row) of the rows a correct filter keeps, derived from the ground truth, not from the trainer."""
    keep = []
    for r, (idx, _) in enumerate(rounds):
        for g in range(len(idx) // G):
            if len(keep) < target * G and informative_idx(idx[g * G]):
                keep.extend((r, g * G + k) for k in range(G))
    return keep


# --- pure functions ----------------------------------------------------------------------------------------------


def test_keep_groups_fills_each_process_in_order():
    informative = torch.tensor([[True, True, False, True], [False, False, True, False]])
    take = keep_groups(informative, torch.tensor([1, 0]), target=2)
    assert take.tolist() == [[True, False, False, False], [False, False, True, False]]
    assert not keep_groups(informative, torch.tensor([2, 5]), target=2).any()  # full processes keep nothing more
    with pytest.raises(ValueError, match="processes"):
        keep_groups(informative[0], torch.tensor([0]), target=2)


def test_informative_groups_judges_gathered_rewards_like_one_process():
    """A batch split across 2 processes and gathered is judged exactly as the same batch in one process."""
    torch.manual_seed(0)
    rewards = (torch.rand(8 * G) < 0.2).float()
    rewards[5] = float("nan")
    gathered = torch.cat([rewards[: 4 * G], rewards[4 * G :]])  # process-major, as accelerate gathers
    one = informative_groups(rewards, G)
    assert informative_groups(gathered, G).view(2, 4).flatten().tolist() == one.tolist()
    for g in range(8):
        group = rewards[g * G : (g + 1) * G]
        group = group[~group.isnan()]
        assert one[g].item() == bool(len(group) and (group != group[0]).any())


def test_refill_order_is_a_seeded_permutation_per_pass():
    n = 10
    first, second = refill_indices(0, n, n, seed=3), refill_indices(n, n, n, seed=3)
    assert sorted(first) == sorted(second) == list(range(n)) and first != second
    assert refill_indices(0, 25, n, seed=3) == first + second + refill_indices(20, 5, n, seed=3)
    assert refill_indices(4, 9, n, seed=3) == (first + second)[4:13]
    assert refill_indices(0, n, n, seed=4) != first
    assert refill_indices(7, 5, n, seed=3, shuffle=False) == [7, 8, 9, 0, 1]


def _trainer(args, model_dir, reward_funcs=(correctness_reward, position_reward), dataset=None):
    return GSM8KGRPOTrainer(model=model_dir, reward_funcs=list(reward_funcs), args=args,
                            train_dataset=dataset if dataset is not None else make_dataset())


def test_config_checks(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="max_sampling_rounds must be >= 1"):
        make_args(tmp_path, max_sampling_rounds=0)
    with pytest.raises(ValueError, match="not supported with use_vllm"):
        make_args(tmp_path, use_vllm=True)
    with pytest.raises(ValueError, match="dynamic_sampling_fill must be 'masked' or 'trained'"):
        make_args(tmp_path, dynamic_sampling_fill="drop")
    args = make_args(tmp_path, dynamic_sampling_reward="steps_reward")
    with pytest.raises(ValueError, match=r"dynamic_sampling_reward='steps_reward' is not one of the reward functions"):
        _trainer(args, tiny_model_dir)
    args = make_args(tmp_path, loss_type="a_future_loss")  # TRL itself only refuses it at the first loss
    with pytest.raises(ValueError, match=r"masked cannot keep masked rows out of loss_type='a_future_loss'"):
        _trainer(args, tiny_model_dir)


# --- real tiny runs, one process -----------------------------------------------------------------------------------


def check_batches(merged, target):
    """Each merged generation batch holds exactly the rows a correct filter keeps, in stream order, each with the
    prompt and completion it was generated with, and nothing else."""
    for rounds, output in merged:
        keep = expected_selection(rounds, target)
        assert len(keep) == target * G, "the test's data must let every batch fill up"
        assert output["advantages"].shape == (target * G,)
        for i, (r, row) in enumerate(keep):
            _, source = rounds[r]
            for key in ("prompt_ids", "completion_ids"):
                assert rows_of(output, key, i) == rows_of(source, key, row), (i, key)
            assert output["advantages"][i] == source["advantages"][row]
        if not torch.distributed.is_initialized():  # with 2 processes it counts both: checked by the caller
            assert output["num_items_in_batch"] == output["completion_mask"].sum()
        assert all(output["advantages"].view(-1, G).abs().sum(1) > 0)  # only groups that teach something


def test_filters_on_the_decision_reward_and_refills(tiny_model_dir, tmp_path):
    args = make_args(tmp_path)
    trainer = _trainer(args, tiny_model_dir)
    merged = record_rounds(trainer)
    trainer.train()
    assert len(merged) == 2
    check_batches(merged, target=2)
    # Round 1 takes the dataloader's prompts; later rounds the refill order, continuing across steps.
    refills = [idx for rounds, _ in merged for idx, _ in rounds[1:]]
    stream = [i for idx in refills for i in idx[::G]]
    assert stream == refill_indices(0, len(stream), 24, seed=0)
    # position_reward has variance everywhere: filtering on the weighted sum would have kept every group.
    logs = trainer.state.log_history[0]
    assert logs["sampling/rounds"] == len(merged[0][0]) > 1
    assert logs["sampling/groups_generated"] == 2 * len(merged[0][0])
    assert logs["sampling/groups_kept"] == 2 and logs["sampling/groups_short"] == 0
    assert trainer.state.stateful_callbacks[DYNAMIC_SAMPLING_STATE]["attributes"]["refill_position"] == len(stream)


def test_short_batch_trains_on_what_it_has_and_says_so(tiny_model_dir, tmp_path, caplog):
    args = make_args(tmp_path, max_steps=1, max_sampling_rounds=3, dynamic_sampling_reward="never_right")
    trainer = _trainer(args, tiny_model_dir, reward_funcs=(never_right, position_reward))
    merged = record_rounds(trainer)
    with caplog.at_level(logging.WARNING, logger="trl_gsm8k.trainer"):
        trainer.train()
    (rounds, output), = merged
    assert len(rounds) == 3
    assert output["completion_mask"].sum() == 0 and output["num_items_in_batch"] == 0
    assert torch.all(output["advantages"] == 0)
    logs = trainer.state.log_history[0]
    assert logs["sampling/groups_kept"] == 0 and logs["sampling/groups_short"] == 2 and logs["loss"] == 0.0
    assert "after 3 rounds, 0 of 2 groups" in caplog.text


def even_prompt_varies(completions, idx, **kwargs):
    """A shaped term with variance only in the groups of even prompts: what a format reward gives a weak model."""
    return [float(i % G) if x % 2 == 0 else 0.0 for i, x in enumerate(idx)]


def test_short_batch_fill_trained_keeps_the_shaped_signal(tiny_model_dir, tmp_path):
    """dynamic_sampling_fill: trained fills the short batch with the last round's dropped groups, those whose
    summed reward varies first, and trains on their advantages instead of masking them."""
    target = 4
    args = make_args(tmp_path, max_steps=1, per_device_train_batch_size=target * G, max_sampling_rounds=2,
                     dynamic_sampling_fill="trained", reward_weights=[1.0, 0.1])
    idx = [1, 13, 3, 4, 5, 7, 8, 17, 11]  # one informative prompt (3); even ones vary on the shaped term
    dataset = Dataset.from_dict({"prompt": [f"What is {i} + 1?" for i in idx], "idx": idx})
    trainer = _trainer(args, tiny_model_dir, reward_funcs=(correctness_reward, even_prompt_varies), dataset=dataset)
    merged = record_rounds(trainer)
    trainer.train()
    (rounds, output), = merged
    assert len(rounds) == 2
    keep = expected_selection(rounds, target)
    short = target - len(keep) // G
    assert short > 0, "the test's data must leave the batch short"
    last_idx, last = rounds[-1]
    dropped = [g for g in range(target) if not informative_idx(last_idx[g * G])]
    varying = [g for g in dropped if last_idx[g * G] % 2 == 0]
    fill = sorted((varying + [g for g in dropped if g not in varying])[:short])  # stacked in batch order
    assert varying and fill != dropped[:short], "the test's data must tell a varying-first fill from batch order"
    expected = keep + [(len(rounds) - 1, g * G + k) for g in fill for k in range(G)]
    assert output["advantages"].shape == (target * G,)
    for i, (r, row) in enumerate(expected):
        source = rounds[r][1]
        assert rows_of(output, "completion_ids", i) == rows_of(source, "completion_ids", row), i
        assert output["advantages"][i] == source["advantages"][row]
        assert output["completion_mask"][i].sum() == source["completion_mask"][row].sum()
    assert output["num_items_in_batch"] == output["completion_mask"].sum() > 0
    filled_advantages = output["advantages"][len(keep):].view(short, G)
    assert int(filled_advantages.ne(0).any(dim=1).sum()) == min(short, len(varying)) > 0
    logs = trainer.state.log_history[0]
    assert logs["sampling/groups_short"] == short and logs["loss"] != 0.0


def test_accumulation_steps_per_generation_and_reuse(tiny_model_dir, tmp_path):
    """Generation batch of 4 groups, split into 2 accumulation steps, each batch used for 2 iterations."""
    args = make_args(tmp_path, per_device_train_batch_size=2 * G, gradient_accumulation_steps=2,
                     steps_per_generation=2, num_iterations=2, max_steps=2, max_sampling_rounds=6)
    trainer = _trainer(args, tiny_model_dir)
    merged = record_rounds(trainer)
    trainer.train()
    assert len(merged) == 1  # 2 optimizer steps × 2 accumulation = 4 micro-steps = one generation reused twice
    check_batches(merged, target=4)
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [1, 2]


def test_resume_continues_the_refill_sequence(tiny_model_dir, tmp_path):
    full = _trainer(make_args(tmp_path / "a", max_steps=3, save_strategy="steps", save_steps=1), tiny_model_dir)
    full_merged = record_rounds(full)
    full.train()
    checkpoint = tmp_path / "a" / "out" / "checkpoint-1"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    position = state["stateful_callbacks"][DYNAMIC_SAMPLING_STATE]["attributes"]["refill_position"]
    assert position == sum(len(rounds) - 1 for rounds, _ in full_merged[:1]) * 2

    resumed = _trainer(make_args(tmp_path / "b", max_steps=3), tiny_model_dir)
    resumed_merged = record_rounds(resumed)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert len(resumed_merged) == 2

    def prompts(merged):
        return [[idx for idx, _ in rounds] for rounds, _ in merged]

    assert prompts(resumed_merged) == prompts(full_merged[1:])


# --- two processes, and the README's ZeRO-2 offload launch -------------------------------------------------------

DIST_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[3])
    from test_sampling import correctness_reward, position_reward, make_dataset, record_rounds, check_batches, G
    from trl_gsm8k.trainer import GSM8KGRPOConfig, GSM8KGRPOTrainer

    model_dir, out_dir, per_device = sys.argv[1], sys.argv[2], int(sys.argv[4])
    args = GSM8KGRPOConfig(
        output_dir=os.path.join(out_dir, "run"), bf16=False, use_cpu=True, report_to="none", max_completion_length=6,
        num_generations=G, per_device_train_batch_size=per_device, max_steps=2, save_strategy="no", seed=0,
        dynamic_sampling=True, max_sampling_rounds=6, reward_weights=[1.0, 0.1], logging_steps=1,
    )
    trainer = GSM8KGRPOTrainer(model=model_dir, reward_funcs=[correctness_reward, position_reward], args=args,
                               train_dataset=make_dataset())
    merged = record_rounds(trainer)
    trainer.train()
    check_batches(merged, target=per_device // G)  # this process kept exactly its first informative groups
    rank = trainer.accelerator.process_index
    batches = [{"rounds": [idx for idx, _ in rounds], "advantages": out["advantages"].tolist(),
                "tokens": out["completion_mask"].sum().item(), "num_items": out["num_items_in_batch"].item(),
                "loss_rows": out["num_loss_rows_in_batch"].item()}
               for rounds, out in merged]
    with open(os.path.join(out_dir, f"batches_{trainer.accelerator.num_processes}_{rank}.json"), "w") as f:
        json.dump({"batches": batches, "log": trainer.state.log_history}, f)
    # Destroy the process group before exit, as accelerate asks: left to interpreter shutdown, gloo's threads
    # sometimes abort the process ("terminate called without an active exception") after all the work is done.
    trainer.accelerator.end_training()
    """
)


def _torchrun(script, *args, nproc=2):
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), str(script)]
    return subprocess.run(cmd + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=600)


def test_two_processes(tiny_model_dir, tmp_path):
    script = tmp_path / "dist_sampling.py"
    script.write_text(DIST_SCRIPT)
    tests_dir = Path(__file__).resolve().parent
    result = _torchrun(script, tiny_model_dir, tmp_path, tests_dir, G)  # one group per process per round
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"batches_2_{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == 2
    refills = []
    for b0, b1 in zip(ranks[0]["batches"], ranks[1]["batches"]):
        # Same rounds on both (no collective left waiting): until the later of the two found its first informative
        # group (each keeps one per batch here).
        first = [next(r for r, idx in enumerate(b["rounds"]) if informative_idx(idx[0])) + 1 for b in (b0, b1)]
        assert len(b0["rounds"]) == len(b1["rounds"]) == max(first)
        assert b0["num_items"] == b1["num_items"] == b0["tokens"] + b1["tokens"]  # the loss's global token count
        assert b0["loss_rows"] == b1["loss_rows"] == 2 * G  # and its global row count: both full here
        # One global refill stream, laid out process-major: rank 0 takes a round's first prompt, rank 1 the next.
        refills += [i for idx0, idx1 in zip(b0["rounds"][1:], b1["rounds"][1:]) for i in (idx0[0], idx1[0])]
    assert refills == refill_indices(0, len(refills), 24, seed=0)
    log = [h for h in ranks[0]["log"] if "sampling/rounds" in h]
    assert log and all(h["sampling/groups_kept"] == 2 and h["sampling/groups_short"] == 0 for h in log)

    # Groups that would straddle two processes are refused before any model loads, with the fix named.
    bad = _torchrun(script, tiny_model_dir, tmp_path / "bad", tests_dir, 2)
    assert bad.returncode != 0 and "dynamic_sampling needs each process's generation batch to hold whole groups" in bad.stderr


def test_zero2_offload_launch(tiny_model_dir, tmp_path):
    recipe = {
        "model_name_or_path": tiny_model_dir, "max_train_samples": 16, "num_generations": 2,
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "max_completion_length": 8, "max_steps": 2,
        "bf16": False, "logging_steps": 1, "report_to": "none", "save_strategy": "no", "seed": 7,
        "activation_checkpointing": False, "reward_funcs": ["correctness", "launch_rewards.char_count_reward"],
        "dynamic_sampling": True, "dynamic_sampling_reward": "char_count_reward", "max_sampling_rounds": 3,
    }
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/zero2_offload.yaml",
        "-m", "trl_gsm8k.train", "--config", str(tmp_path / "recipe.yaml"), "--output_dir", str(tmp_path / "run"),
    ], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["zero_stage"] == 2 and info["zero_cpu_offload"] is True
    logs = [h for h in json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2]
    assert all(h["sampling/rounds"] >= 1 and h["sampling/groups_kept"] >= 1 for h in logs)


def test_ctrl_c_saves_the_refill_position_of_the_last_completed_step(tiny_model_dir, tmp_path):
    """An abandoned step may already have drawn refill prompts; the checkpoint Ctrl-C writes must not count them."""
    from trl_gsm8k.train import StopOnInterrupt, _CLITrainer

    args = make_args(tmp_path, max_steps=1)
    trainer = _CLITrainer(model=tiny_model_dir, reward_funcs=[correctness_reward, position_reward], args=args,
                          train_dataset=make_dataset())
    trainer.train()
    stop = StopOnInterrupt(trainer)
    stop.on_step_end(trainer.args, trainer.state, trainer.control)  # the last completed step's end
    done = trainer.state.stateful_callbacks[DYNAMIC_SAMPLING_STATE]["attributes"]["refill_position"]
    trainer._refill_batch(2 * G)  # the abandoned step's refill round
    assert trainer.state.stateful_callbacks[DYNAMIC_SAMPLING_STATE]["attributes"]["refill_position"] > done
    assert stop.save()
    saved = json.loads((tmp_path / "out" / "checkpoint-1" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"][DYNAMIC_SAMPLING_STATE]["attributes"]["refill_position"] == done


# --- dynamic_sampling_fill: masked leaves the kept rows' gradient as it is, for every TRL loss type -----------------


def trl_loss_types() -> list[str]:
    """The loss types TRL's own config lists ("Supported values are 'grpo', ..."), read from the installed TRL."""
    from trl import GRPOConfig

    help_text = GRPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    return re.findall(r"'(\w+)'", re.search(r"Supported values are (.*?)\. ", help_text).group(1))


def test_trl_loss_types_are_the_ones_compute_loss_branches_on():
    from trl import GRPOTrainer

    src = inspect.getsource(GRPOTrainer._compute_loss)
    branched = {name for line in src.splitlines() if "self.loss_type" in line for name in re.findall(r'"(\w+)"', line)}
    assert set(trl_loss_types()) == branched and len(trl_loss_types()) >= 8
    # The trainer's classification by normaliser covers exactly TRL's loss types ...
    assert sorted(ROW_NORMALISED_LOSSES + TOKEN_NORMALISED_LOSSES) == sorted(trl_loss_types())
    # ... and the row counts it corrects are where it expects them.
    for needle in ('if self.loss_type in ["grpo", "sapo"]:',
                   "loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()",
                   "loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * self.max_completion_length)",
                   "loss = (per_token_loss * mask).sum(-1).mean()",
                   "per_token_loss = per_token_loss + self.beta * per_token_kl"):
        assert needle in src, f"TRL's _compute_loss changed (missing {needle!r}): re-check _masked_rows_scale"


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in model.parameters()])


def _rows(batch: dict, rows) -> dict:
    return {k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() else v) for k, v in batch.items()}


MASKED_FILL_CASES = [pytest.param(t, {}, id=t) for t in trl_loss_types()] + [
    # TRL's reference KL rides on the same normaliser; so does this package's KL to π_old.
    pytest.param("grpo", {"beta": 1.0}, id="grpo-beta"),
    pytest.param("dr_grpo", {"kl_old_coef": 0.3, "disable_dropout": True}, id="dr_grpo-kl_old"),
    # Two micro-batches per generation batch: TRL shuffles and splits it, so kept rows land unevenly in them; each
    # kept row must still weigh 1/K in the window's gradient.
    pytest.param("grpo", {"gradient_accumulation_steps": 2, "steps_per_generation": 2}, id="grpo-accumulation"),
    # The GPU recipes' precision (bf16 autocast; emulated on a CPU without native bf16): the merge and the row scale
    # must not depend on it.
    pytest.param("grpo", {"bf16": True, "allow_emulated_bf16": True}, id="grpo-bf16"),
]
KEPT_GROUPS, TARGET_GROUPS = 1, 4


@pytest.fixture(scope="module")
def short_masked_batch(tiny_model_dir, tmp_path_factory):
    """A trainer per configuration and its real dynamically sampled batch: 4 groups of which only prompt 0's has one
    right completion, max_sampling_rounds 1, so 1 group is kept and 3 masked filler groups fill the batch. The loss
    types of one configuration share it (TRL reads `self.loss_type` only in `_compute_loss`)."""
    cache = {}

    def build(extra: dict):
        key = tuple(sorted(extra.items()))
        if key not in cache:
            spg = extra.get("steps_per_generation", 1)
            args = make_args(tmp_path_factory.mktemp("masked"), max_steps=1, max_sampling_rounds=1, num_iterations=2,
                             dynamic_sampling_fill="masked", per_device_train_batch_size=TARGET_GROUPS * G // spg,
                             **extra)
            trainer = _trainer(args, tiny_model_dir)
            trainer.model.train()
            trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps  # set by Trainer's loop
            idx = [0, 1, 2, 4]
            assert [informative_idx(i) for i in idx].count(True) == KEPT_GROUPS
            merged = trainer._generate_and_score_completions([make_dataset()[i] for i in idx for _ in range(G)])
            # A reused batch (num_iterations 2): π_old differs from π_θ, so ratios clip, SAPO's gate and VESPO's
            # weights bend, CISPO's clamp bites: the loss is far from linear in the log-probs.
            torch.manual_seed(0)
            old = merged["old_per_token_logps"]
            merged["old_per_token_logps"] = old + 0.3 * torch.randn_like(old)
            if args.beta:  # π_ref away from π_θ, or TRL's KL term has no gradient
                merged["ref_per_token_logps"] = old + 0.3 * torch.randn_like(old)
            # Kept completions of different lengths (as an EOS cuts them), so that per-row and per-token
            # normalisations differ.
            for r in range(KEPT_GROUPS * G):
                merged["completion_mask"][r, r + 2 :] = 0
            merged["num_items_in_batch"] = merged["completion_mask"].sum()
            cache[key] = trainer, merged
        return cache[key]

    return build


@pytest.mark.parametrize("loss_type,extra", MASKED_FILL_CASES)
def test_masked_fill_leaves_the_kept_rows_gradient_unchanged(short_masked_batch, loss_type, extra):
    """A short batch of 1 kept group and 3 masked filler groups must train exactly as the kept group alone: masked rows
    add nothing to the loss and nothing to its normalisation (a row count for grpo, sapo, dr_grpo and luspo).

    Merged: the real generation batch, through TRL's shuffle and split, then the trainer's loss, gradients summed over
    the accumulation window. Alone: TRL's own `_compute_loss` on the kept rows only (this package's where kl_old is
    on), split into as many micro-batches, with the token count TRL would give them."""
    from trl import GRPOTrainer
    from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

    trainer, merged = short_masked_batch(extra)
    trainer.loss_type = trainer.args.loss_type = loss_type
    kept = KEPT_GROUPS * G  # _concat_rows stacks the kept groups first, then the filler
    assert merged["advantages"][:kept].abs().sum() > 0 and not merged["advantages"][kept:].any()
    assert merged["completion_mask"][:kept].sum(1).gt(0).all() and not merged["completion_mask"][kept:].any()
    micro_batches = trainer.args.steps_per_generation

    def window_gradient(batches, loss_fn):
        trainer.model.zero_grad()
        for batch in batches:
            loss_fn(trainer.model, batch).backward()
        return _grads(trainer.model)

    torch.manual_seed(1)
    split = split_tensor_dict(shuffle_sequence_dict(merged), micro_batches)
    if micro_batches > 1:  # the case worth testing: kept rows spread unevenly (filler rows have no tokens)
        assert len({int(b["completion_mask"].sum(1).gt(0).sum()) for b in split}) > 1
    merged_grad = window_gradient(split, trainer.compute_loss)
    alone = _rows(merged, slice(0, kept))
    alone.pop("num_loss_rows_in_batch", None)  # what TRL's batch of the kept rows would hold
    alone["num_items_in_batch"] = alone["completion_mask"].sum()
    if trainer.kl_old_coef:
        reference = trainer._compute_loss
    else:
        def reference(model, batch):
            return GRPOTrainer._compute_loss(trainer, model, batch)
    alone_grad = window_gradient(split_tensor_dict(alone, micro_batches), reference)

    assert alone_grad.abs().max() > 0
    ratio = float(merged_grad @ alone_grad / (alone_grad @ alone_grad))
    # fp32: the two passes differ only in batch shape (rows in each matmul) and summation order, ~1e-7 relative.
    # bf16: the same differences, rounded to 8 bits (2^-8 ≈ 0.4 %) at each matmul's output; the bug this guards
    # against is a factor (0.25 for grpo).
    rtol, atol = (2e-2, 2e-2) if trainer.args.bf16 else (1e-5, 1e-6)
    assert ratio == pytest.approx(1.0, abs=rtol), f"{loss_type}: merged/alone gradient ratio {ratio:.4f}"
    torch.testing.assert_close(merged_grad, alone_grad, rtol=rtol, atol=atol * float(alone_grad.abs().max()),
                               msg=lambda m: f"{loss_type}: merged/alone gradient ratio {ratio:.4f}\n{m}")
