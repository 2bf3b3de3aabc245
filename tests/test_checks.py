"""Launch problems are caught before any weight is loaded, each with a message naming its fix."""

import json

import pytest

from trl_gsm8k.checks import (
    LaunchError,
    check_distributed_environment,
    check_fits_in_memory,
    check_model_config,
    check_precision,
    estimate_weight_bytes,
)
from trl_gsm8k.config import parse, read_recipe
from trl_gsm8k.train import cli


def test_deepspeed_with_several_cpu_processes_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LaunchError, match="torchrun --nproc_per_node"):
        check_distributed_environment(8, cuda_available=False)
    check_distributed_environment(8, cuda_available=True)  # fine on GPUs


def test_accumulation_in_the_accelerate_files_must_match_the_recipe(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    with pytest.raises(LaunchError, match="4 in the accelerate config's deepspeed_config but 8 in the recipe"):
        check_distributed_environment(8, cuda_available=False)
    check_distributed_environment(4, cuda_available=False)
    monkeypatch.delenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"gradient_accumulation_steps": 2}))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(config))
    with pytest.raises(LaunchError, match="set it to \"auto\""):
        check_distributed_environment(8, cuda_available=False)
    config.write_text(json.dumps({"gradient_accumulation_steps": "auto"}))
    check_distributed_environment(8, cuda_available=False)


def test_shipped_deepspeed_configs_leave_sizes_to_the_recipe():
    for name in ("zero2_offload.json", "zero3.json"):
        config = json.loads(open(f"accelerate_configs/deepspeed/{name}").read())
        for key in ("gradient_accumulation_steps", "train_batch_size", "train_micro_batch_size_per_gpu"):
            assert config[key] == "auto", (name, key)


# What torch.cpu.get_capabilities() reports on machines of each kind (the keys that matter here).
AMX_XEON = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bw": True, "avx512_bf16": True,
            "amx_tile": True, "amx_bf16": True}  # Sapphire Rapids and later
COOPER_LAKE = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bw": True, "avx512_bf16": True}
SKYLAKE_SP = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bw": True, "avx512_dq": True,
              "avx512_vl": True}  # oneDNN runs bf16 here, emulated (torch.ops.mkldnn._is_mkldnn_bf16_supported())
EPYC_ZEN3 = {"architecture": "x86_64", "avx2": True}


def on_cpu_with(monkeypatch, capabilities: dict) -> None:
    """This process sees a machine without CUDA whose CPU torch reports with these capabilities."""
    import types

    import torch

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: types.MappingProxyType(capabilities))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_native_cpu_bf16_is_amx_or_avx512_bf16_as_torch_reports_it(monkeypatch):
    import torch

    from trl_gsm8k.precision import native_cpu_bf16

    expected = {"AMX-BF16": AMX_XEON, "AVX512-BF16": COOPER_LAKE, None: SKYLAKE_SP}
    for native, capabilities in {**expected, "none": EPYC_ZEN3}.items():
        on_cpu_with(monkeypatch, capabilities)
        assert native_cpu_bf16() == (None if native == "none" else native), capabilities
    monkeypatch.undo()
    here = torch.cpu.get_capabilities()
    assert (native_cpu_bf16() is not None) == bool(here.get("amx_bf16") or here.get("avx512_bf16"))


def test_bf16_on_cpu_runs_where_native_and_names_the_fix_where_emulated():
    check_precision(bf16=True, fp16=False, use_cpu=False, cuda_available=True)  # a GPU
    check_precision(bf16=False, fp16=False, use_cpu=True, cuda_available=False)
    check_precision(bf16=True, fp16=False, use_cpu=True, cuda_available=False, cpu_bf16="AMX-BF16")
    with pytest.raises(LaunchError) as refused:
        check_precision(bf16=True, fp16=False, use_cpu=False, cuda_available=False, cpu_bf16=None)
    message = str(refused.value)
    assert "\n" not in message and "would be emulated, many times slower than fp32" in message
    for fix in ("`bf16: auto`", "`bf16: false`", "`allow_emulated_bf16: true`"):
        assert fix in message
    check_precision(bf16=True, fp16=False, use_cpu=True, cuda_available=False, cpu_bf16=None, allow_emulated=True)
    with pytest.raises(LaunchError, match="fp16: true needs a GPU"):
        check_precision(bf16=False, fp16=True, use_cpu=True, cuda_available=False, cpu_bf16="AMX-BF16")


DEMO = "recipes/smollm2-135m_cpu_demo.yaml"


def test_bf16_true_on_a_cpu_with_native_bf16_trains_in_bf16(monkeypatch, tmp_path):
    """Failed before issue 20 (every bf16 on the CPU was refused: "bf16: true needs a GPU")."""
    on_cpu_with(monkeypatch, AMX_XEON)
    _, args, _ = parse(["--config", DEMO, "--output_dir", str(tmp_path), "--bf16", "true"])
    assert args.bf16 is True and args.use_cpu is True  # transformers needs use_cpu for bf16 without a GPU
    assert "AMX-BF16" in args.precision_note and "fp32 master weights" in args.precision_note
    on_cpu_with(monkeypatch, SKYLAKE_SP)
    with pytest.raises(LaunchError, match=r"would be emulated.*`bf16: auto`.*`allow_emulated_bf16: true`"):
        parse(["--config", DEMO, "--output_dir", str(tmp_path), "--bf16", "true"])
    _, args, _ = parse(["--config", DEMO, "--output_dir", str(tmp_path), "--bf16", "true",
                        "--allow_emulated_bf16", "true"])
    assert args.bf16 is True and args.use_cpu is True and "emulated" in args.precision_note


def test_bf16_auto_is_bf16_where_native_and_fp32_elsewhere_said_in_one_line(monkeypatch, tmp_path):
    from trl_gsm8k.precision import resolve_bf16

    recipe = tmp_path / "auto.yaml"
    recipe.write_text("bf16: auto\nnum_generations: 2\nper_device_train_batch_size: 2\n")
    on_cpu_with(monkeypatch, COOPER_LAKE)
    _, args, _ = parse(["--config", str(recipe), "--output_dir", str(tmp_path)])
    assert args.bf16 is True and args.use_cpu is True and "AVX512-BF16" in args.precision_note
    on_cpu_with(monkeypatch, EPYC_ZEN3)
    _, args, _ = parse(["--config", str(recipe), "--output_dir", str(tmp_path)])
    assert args.bf16 is False and args.use_cpu is False
    assert args.precision_note.startswith("bf16: auto → fp32") and "\n" not in args.precision_note
    # On a GPU: bf16 where it has it (Ampere+), fp32 on older ones; `true` is left to the GPU.
    assert resolve_bf16("auto", False, False, cuda_available=True, gpu_bf16=True) == (True, False, None)
    assert resolve_bf16("auto", False, False, cuda_available=True, gpu_bf16=False)[:2] == (False, False)
    assert resolve_bf16(True, False, False, cuda_available=True) == (True, False, None)
    # Not set: TRL's default (bf16 unless fp16), so refused here like `true`.
    with pytest.raises(LaunchError, match="would be emulated"):
        resolve_bf16(None, False, False, cuda_available=False, cpu_bf16=None)
    assert resolve_bf16(None, True, False, cuda_available=False).bf16 is False
    with pytest.raises(LaunchError, match="bf16 must be true, false or auto, got 'maybe'"):
        parse(["--config", str(recipe), "--output_dir", str(tmp_path), "--bf16", "maybe"])


def test_missing_model_path(tmp_path):
    with pytest.raises(LaunchError, match="does not exist"):
        check_model_config(str(tmp_path / "nowhere"))
    with pytest.raises(LaunchError, match="Cannot read the config"):
        check_model_config(str(tmp_path))  # exists, but holds no model


def test_model_too_large_for_the_machine(tiny_model_dir):
    from transformers import Qwen2Config

    config = Qwen2Config(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
    # Qwen2.5-1.5B: 1.54 B parameters (Qwen's model card); our count from the config must land close.
    assert estimate_weight_bytes(config, 1) == pytest.approx(1.54e9, rel=0.03)
    with pytest.raises(LaunchError, match="load_in_4bit"):
        check_fits_in_memory(config, 2.0, 2 * 2**30, "the GPU")
    check_fits_in_memory(check_model_config(tiny_model_dir), 4.0, 2**30, "the GPU")


def test_recipe_errors_raise_one_clear_line_and_the_cli_prints_it(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("learning_rate: [1e-5\n")
    with pytest.raises(LaunchError, match="not valid YAML"):
        parse(["--config", str(bad_yaml)])
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("learning_rte: 1.0e-5\nbf16: false\n")
    with pytest.raises(LaunchError, match="learning_rte.*check the key's spelling"):
        parse(["--config", str(unknown)])
    with pytest.raises(LaunchError, match="recipe not found"):
        parse(["--config", str(tmp_path / "missing.yaml")])
    indivisible = tmp_path / "indivisible.yaml"
    indivisible.write_text("bf16: false\nper_device_train_batch_size: 3\nnum_generations: 2\n")
    with pytest.raises(LaunchError, match="must be divisible by num_generations"):
        parse(["--config", str(indivisible), "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="^error: recipe not found"):  # only the CLI exits
        cli(["--config", str(tmp_path / "missing.yaml")])


@pytest.mark.parametrize("reader", [lambda path: parse(["--config", path]), read_recipe],
                         ids=["parse", "read_recipe"])
def test_both_recipe_readers_refuse_bad_recipes_in_one_line(tmp_path, reader):
    cases = {"bad.yaml": ("learning_rate: [1e-5\n", "not valid YAML"),
             "list.yaml": ("- bf16: false\n", "must contain a YAML mapping"),
             "unknown.yaml": ("learning_rte: 1.0e-5\nbf16: false\n", "learning_rte.*check the key's spelling")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(LaunchError, match=message):
            reader(str(tmp_path / name))
    with pytest.raises(LaunchError, match="recipe not found"):
        reader(str(tmp_path / "missing.yaml"))
    with pytest.raises(LaunchError, match=f"cannot read the recipe {tmp_path}"):
        reader(str(tmp_path))  # a directory


def test_read_recipe_reads_a_gpu_recipe_without_a_gpu_and_keeps_its_precision(tmp_path):
    recipe = tmp_path / "gpu.yaml"
    recipe.write_text("bf16: true\nlearning_rate: 3.0e-6\nsystem_prompt: Be brief.\n")
    read = read_recipe(str(recipe), ["--output_dir", str(tmp_path)])
    assert read.mixed_precision and not read.training_args.bf16  # built without bf16: no GPU needed
    auto = read_recipe(str(recipe), ["--output_dir", str(tmp_path), "--bf16", "auto"])
    assert auto.mixed_precision and not auto.training_args.bf16  # planned as bf16: what auto is on a bf16 GPU
    assert read.training_args.learning_rate == 3e-6 and read.script_args.system_prompt == "Be brief."
    assert not read_recipe(str(recipe), ["--output_dir", str(tmp_path), "--bf16", "false"]).mixed_precision
    cpu = tmp_path / "cpu.yaml"
    cpu.write_text("bf16: false\nlearning_rate: 3.0e-6\nnum_generations: 4\nper_device_train_batch_size: 4\n")
    overrides = ["--output_dir", str(tmp_path), "--num_generations", "2"]
    read = read_recipe(str(cpu), overrides)
    parsed = parse(["--config", str(cpu), *overrides])
    assert not read.mixed_precision and read.training_args.num_generations == 2
    assert read.training_args.to_dict() == parsed[1].to_dict() and read.script_args == parsed[0]


def test_cli_reports_launch_errors_before_loading_weights(tmp_path, tiny_model_dir):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model_name_or_path: {tiny_model_dir}\nbf16: false\nuse_cpu: true\nreward_funcs: [corect]\n")
    with pytest.raises(SystemExit, match="Unknown reward function 'corect'"):
        cli(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    recipe.write_text(f"model_name_or_path: {tmp_path}/missing-model\nbf16: false\nuse_cpu: true\n")
    with pytest.raises(SystemExit, match="does not exist"):
        cli(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    recipe.write_text(f"model_name_or_path: {tiny_model_dir}\nbf16: false\nuse_cpu: true\ndataset_source: {tmp_path}/nope\n")
    with pytest.raises(SystemExit, match="neither 'bundled'"):
        cli(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    recipe.write_text(f"model_name_or_path: {tiny_model_dir}\nbf16: false\nuse_cpu: true\nmax_solution_steps: -1\n")
    with pytest.raises(SystemExit, match="max_solution_steps must be 0 or more"):
        cli(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    recipe.write_text(f"model_name_or_path: {tiny_model_dir}\nbf16: false\nuse_cpu: true\nreward_weights: [1.0]\n")
    with pytest.raises(SystemExit, match="one weight per function"):
        cli(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# --- a GPU recipe on the CPU: the refusal names the overrides of a CPU smoke test, and they pass the checks ---------
GPU_RECIPES = ["recipes/qwen2.5-1.5b-instruct_lora_zero2-offload.yaml", "recipes/r1-distill-qwen-1.5b_qlora.yaml",
               "recipes/r1-distill-qwen-1.5b_full_zero2-offload.yaml"]


def appended_flags(message: str) -> list[str]:
    import re
    import shlex

    found = re.search(r"To smoke-test this recipe on the CPU, append `([^`]+)`", message)
    assert found, message
    return shlex.split(found.group(1))


def passes_the_checks_before_the_model(argv: list[str]):
    """What build_trainer checks before it resolves the model, on the parsed command line."""
    from trl_gsm8k.checks import check_cpu_settings

    script_args, args, model_args = parse(argv)
    check_distributed_environment(args.gradient_accumulation_steps)
    check_precision(args.bf16, args.fp16, args.use_cpu, allow_emulated=args.allow_emulated_bf16)
    check_cpu_settings(args, model_args)
    return args, model_args


@pytest.mark.parametrize("recipe", GPU_RECIPES)
def test_a_gpu_recipe_on_a_cpu_without_bf16_names_the_flags_that_make_it_a_cpu_smoke_test(monkeypatch, tmp_path,
                                                                                          recipe):
    on_cpu_with(monkeypatch, EPYC_ZEN3)
    argv = ["--config", recipe, "--output_dir", str(tmp_path)]
    with pytest.raises(LaunchError, match="would be emulated") as refused:
        parse(argv)
    message = str(refused.value)
    assert "\n" not in message
    flags = appended_flags(message)
    expected = ["--use_cpu", "true", "--bf16", "false", "--dtype", "float32"]  # bf16 weights would be emulated too
    if "qlora" in recipe:
        expected += ["--load_in_4bit", "false"]
    assert flags == expected
    assert "`--model_name_or_path smollm2-135m-instruct --max_steps 2`" in message  # a Hub model: the quick variant
    args, model_args = passes_the_checks_before_the_model(argv + flags)
    assert (args.use_cpu, args.bf16, model_args.dtype, model_args.load_in_4bit) == (True, False, "float32", False)


def test_gpu_only_settings_on_a_cpu_with_bf16_are_refused_with_the_flags_that_pass(monkeypatch, tmp_path):
    """On a CPU that computes bf16 (so the precision passes), QLoRA and vLLM are still GPU-only: refused before any
    weight loads, naming only what must change."""
    from trl_gsm8k.errors import NeedsGPU

    on_cpu_with(monkeypatch, AMX_XEON)
    cases = {"recipes/r1-distill-qwen-1.5b_qlora.yaml": (["--load_in_4bit", "false"], "load_in_4bit: true"),
             "recipes/qwen2.5-1.5b-instruct_lora_zero2-offload.yaml": (["--use_vllm", "false"], "use_vllm: true")}
    for recipe, (expected, setting) in cases.items():
        argv = ["--config", recipe, "--output_dir", str(tmp_path)]
        argv += ["--use_vllm", "true"] if "vllm" in setting else []
        with pytest.raises(NeedsGPU, match=f"^{setting} needs a CUDA GPU") as refused:
            passes_the_checks_before_the_model(argv)
        assert appended_flags(str(refused.value)) == expected
        args, _ = passes_the_checks_before_the_model(argv + expected)
        assert args.bf16 and args.use_cpu  # bf16 kept: this CPU computes it


def test_under_the_launcher_the_error_file_holds_the_one_line(monkeypatch, tmp_path):
    """torch's elastic launcher prints the worker's error file as the failure's root cause: our line, not a
    traceback. An unexpected exception keeps torch's record (its traceback)."""
    from trl_gsm8k.errors import LaunchError as Known
    from trl_gsm8k.errors import recorded

    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    with pytest.raises(SystemExit) as exited:
        cli(["--config", str(tmp_path / "missing.yaml")])
    record = json.loads(error_file.read_text())
    assert record["message"] == str(exited.value) == f"error: recipe not found: {tmp_path / 'missing.yaml'}"

    def crash():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        recorded(crash, (Known,))()
    assert "Traceback" in json.loads(error_file.read_text())["message"]["extraInfo"]["py_callstack"]
