"""Recipes: every one parses; the tutorial's 8 GB recipe holds exactly the tutorial's values."""

import glob

import pytest

from trl_gsm8k.rewards import get_reward_funcs
from trl_gsm8k.config import parse

RECIPES = sorted(glob.glob("recipes/*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_parses(recipe, tmp_path):
    script_args, training_args, model_args = parse(
        ["--config", recipe, "--output_dir", str(tmp_path), "--bf16", "false", "--use_cpu", "true"]
    )
    assert model_args.model_name_or_path
    assert training_args.generation_batch_size % training_args.num_generations == 0
    get_reward_funcs(script_args.reward_funcs)


def test_tutorial_recipe_is_the_tutorials(tmp_path):
    _, args, model = parse(["--config", "recipes/r1-distill-qwen-1.5b_lora_zero2-offload.yaml",
                            "--output_dir", str(tmp_path), "--bf16", "false", "--use_cpu", "true"])
    assert model.model_name_or_path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    assert (model.use_peft, model.lora_r, model.lora_alpha, model.lora_dropout) == (True, 16, 32, 0.05)
    assert sorted(model.lora_target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert (args.learning_rate, args.num_generations, args.per_device_train_batch_size) == (5e-5, 4, 1)
    assert (args.gradient_accumulation_steps, args.num_train_epochs, args.max_completion_length) == (8, 3, 256)
    assert (args.temperature, args.max_grad_norm, args.beta) == (0.7, 1.0, 0.0)
    assert args.activation_checkpointing is True


def test_variants():
    parsed = {r: parse(["--config", r, "--output_dir", "/tmp/x", "--bf16", "false", "--use_cpu", "true"]) for r in RECIPES}
    names = {r.split("/")[-1]: v for r, v in parsed.items()}
    assert names["r1-distill-qwen-1.5b_qlora.yaml"][2].load_in_4bit is True
    assert names["r1-distill-qwen-1.5b_full_zero2-offload.yaml"][2].use_peft is False
    kl = names["r1-distill-qwen-1.5b_lora_kl-old_zero2-offload.yaml"][1]
    assert kl.kl_old_coef > 0 and kl.num_iterations > 1
    assert names["qwen2.5-1.5b-instruct_lora_zero2-offload.yaml"][2].model_name_or_path == "Qwen/Qwen2.5-1.5B-Instruct"
    demo = names["smollm2-135m_cpu_demo.yaml"]
    assert demo[2].model_name_or_path == "smollm2-135m-instruct" and demo[1].bf16 is False


def test_curriculum_option_parses(tmp_path):
    script_args, _, _ = parse(["--config", "recipes/smollm2-135m_cpu_demo.yaml", "--output_dir", str(tmp_path),
                               "--max_solution_steps", "2"])
    assert script_args.max_solution_steps == 2


def test_tags_demo_differs_from_the_demo_only_in_its_template():
    """The two CPU demos compare answer templates on one model: nothing else may differ."""
    import yaml

    demo, tags = (yaml.safe_load(open(f"recipes/{name}.yaml")) for name in ("smollm2-135m_cpu_demo",
                                                                             "smollm2-135m_cpu_demo_tags"))
    differ = {key for key in demo.keys() | tags.keys() if demo.get(key) != tags.get(key)}
    assert differ == {"system_prompt", "reward_funcs", "output_dir"}
    assert tags["reward_funcs"] == ["correctness", "tag_format"]


@pytest.mark.parametrize("recipe", ["recipes/smollm2-135m_cpu_demo.yaml", "recipes/smollm2-135m_cpu_demo_tags.yaml"])
def test_the_prompts_worked_example_earns_every_reward_of_its_recipe(recipe, tmp_path):
    script_args, _, _ = parse(["--config", recipe, "--output_dir", str(tmp_path), "--bf16", "false"])
    example = script_args.system_prompt.split("How many apples are left?\n", 1)[1]  # the example's answer, gold 10
    for func in get_reward_funcs(script_args.reward_funcs):
        assert func([example], answer=["10"]) == [1.0], func.__name__
