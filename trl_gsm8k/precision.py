"""Which precision a run computes in: bf16 where the hardware computes it natively, fp32 elsewhere.

bf16 here is the GPU recipes' mixed precision, on a GPU or a CPU alike: bf16 compute, fp32 master weights and
optimizer state. Under DeepSpeed (``"bf16": {"enabled": "auto"}``, filled from the recipe's ``bf16``) the engine
casts the module to bf16 and its optimizer (DeepSpeed's CPU Adam with ZeRO-Offload) updates fp32 copies of the
weights; without DeepSpeed, Accelerate wraps the model's forward in ``torch.autocast(device, torch.bfloat16)`` and
the weights stay fp32. Either way an update far below a weight's bf16 spacing (lr 1e-5 on a weight of 0.02, whose
spacing is 1.2e-4) accumulates in fp32 instead of rounding away.

A CPU computes bf16 natively when it has AMX-BF16 or AVX512-BF16 (Intel Xeon Cooper Lake, Sapphire Rapids and later,
not Skylake, Cascade Lake or Ice Lake; AMD Zen 4 and later) and PyTorch reaches it through oneDNN. Elsewhere bf16 is emulated: converted to fp32 and back around
fp32 arithmetic, slower than fp32 itself (one step of the CPU demo in emulated bf16: 584 s on 2 cores of an AVX2-only
AMD EPYC shared with other jobs; in fp32 on the idle machine ~38 s). (``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is not the test: it is
true on any AVX512-BW CPU, where oneDNN's bf16 is that emulation.) Other CPUs (ARM's BF16 extension included) are
treated as emulating until measured.

A recipe says ``bf16: true`` (bf16, refused with the fix where it would be emulated), ``bf16: false`` (fp32), or
``bf16: auto`` (bf16 where native, else fp32, said in one line); ``allow_emulated_bf16: true`` runs bf16 on any CPU,
slower but correct (CI runs the GPU recipes' precision path that way). This module imports nothing of the package
but its error type, so that the recipe reader (``config.py``) and the checks (``checks.py``) can both use it.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any, NamedTuple

from .errors import NeedsGPU

# torch.cpu.get_capabilities() keys of the instruction sets that compute bf16 natively, best first.
NATIVE_CPU_BF16 = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"))
AUTO = "auto"


def cpu_capabilities() -> Mapping[str, Any]:
    """What torch detects on this CPU (``torch.cpu.get_capabilities()``, torch ≥ 2.10; older torch: its probes)."""
    import torch

    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        return get()
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    return {key: bool(getattr(torch.cpu, name, lambda: False)()) for key, name in probes.items()}


def native_cpu_bf16(capabilities: Mapping[str, Any] | None = None) -> str | None:
    """The instruction set this CPU computes bf16 with ('AMX-BF16', 'AVX512-BF16'), or None where bf16 is emulated.

    >>> native_cpu_bf16({"avx2": True, "avx512_f": True, "avx512_bw": True}) is None  # Skylake-SP: emulated
    True
    >>> native_cpu_bf16({"avx512_bf16": True, "amx_bf16": True, "amx_tile": True})
    'AMX-BF16'
    """
    if capabilities is None:
        import torch

        if not torch.backends.mkldnn.is_available():  # no oneDNN in this torch build: no fast bf16 kernels
            return None
        capabilities = cpu_capabilities()
    for key, name in NATIVE_CPU_BF16:
        if capabilities.get(key):
            return name
    return None


def cpu_name() -> str:
    """The CPU's model name, as benchmarks and messages name it ('Intel(R) Xeon(R) ...', 'AMD EPYC')."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def parse_bf16(value: Any) -> bool | str | None:
    """A recipe's or command line's ``bf16``: True, False, 'auto', or None (not set: TRL's default, bf16)."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if text in ("true", "yes", "y", "t", "1", "on"):
        return True
    if text in ("false", "no", "n", "f", "0", "off"):
        return False
    raise ValueError(f"bf16 must be true, false or auto, got {value!r}.")


def _emulated_line(where: str) -> str:
    return (f"bf16 on this CPU ({where}: no AMX-BF16 or AVX512-BF16) would be emulated, many times slower than fp32. Set "
            "`bf16: auto` (bf16 where the CPU or GPU computes it natively, fp32 here) or `bf16: false`; to run it "
            "emulated anyway (slower but correct, e.g. to test the GPU recipes' precision path), add "
            "`allow_emulated_bf16: true`.")


def check_precision(bf16: bool, fp16: bool, use_cpu: bool, cuda_available: bool | None = None,
                    allow_emulated: bool = False, cpu_bf16: str | None | bool = False) -> None:
    """Refuse, with the fix in one line, a precision this machine cannot run as asked: fp16 on the CPU, bf16 on a
    CPU that would emulate it (unless ``allow_emulated``). ``cpu_bf16``: the CPU's native bf16 instruction set, None
    for none; left out (False), read from torch."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    on_cpu = use_cpu or not cuda_available
    if fp16 and on_cpu:
        raise NeedsGPU(
            "fp16: true needs a GPU, and this run is on the CPU (PyTorch has no fp16 mixed precision there). Set "
            "`fp16: false`, and `bf16: auto` for bf16 where the CPU computes it natively.", {"fp16": "false"}
        )
    if bf16 and on_cpu and not allow_emulated:
        native = native_cpu_bf16() if cpu_bf16 is False else cpu_bf16
        if native is None:
            raise NeedsGPU(_emulated_line(cpu_name()), {"bf16": "false"})


class Precision(NamedTuple):
    bf16: bool
    use_cpu: bool
    note: str | None  # one line for the user when the choice is not what the recipe literally says, or is emulated


def resolve_bf16(requested: bool | str | None, fp16: bool, use_cpu: bool, allow_emulated: bool = False,
                 cuda_available: bool | None = None, gpu_bf16: bool | None = None,
                 cpu_bf16: str | None | bool = False) -> Precision:
    """The run's ``bf16`` and ``use_cpu`` from what the recipe asked (True, False, 'auto', None: TRL's default, bf16
    unless fp16). bf16 on the CPU also sets ``use_cpu`` (transformers refuses bf16 without it on a machine without
    a GPU; the device is the CPU anyway). Raises `LaunchError` where bf16 is asked on a CPU that would emulate it."""
    import torch

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    requested = parse_bf16(requested)
    if requested is None:
        requested = not fp16
    on_cpu = use_cpu or not cuda_available
    if not requested:
        return Precision(False, use_cpu, None)
    if not on_cpu:
        if requested != AUTO:
            return Precision(True, use_cpu, None)
        if gpu_bf16 is None:
            gpu_bf16 = torch.cuda.is_bf16_supported()
        note = None if gpu_bf16 else "bf16: auto → fp32: this GPU has no native bf16 (NVIDIA Ampere or newer has)."
        return Precision(bool(gpu_bf16), use_cpu, note)
    native = native_cpu_bf16() if cpu_bf16 is False else cpu_bf16
    if native is not None:
        return Precision(True, True, f"bf16 on the CPU ({cpu_name()}, {native}): bf16 compute, fp32 master weights.")
    if requested == AUTO:
        return Precision(False, use_cpu, f"bf16: auto → fp32: this CPU ({cpu_name()}) has no AMX-BF16 or "
                                          "AVX512-BF16, so bf16 would be emulated and slower.")
    if allow_emulated:
        return Precision(True, True, f"bf16 emulated on this CPU ({cpu_name()}: no AMX-BF16 or AVX512-BF16), "
                                     "slower than fp32 (allow_emulated_bf16: true).")
    raise NeedsGPU(_emulated_line(cpu_name()), {"bf16": "false"})
