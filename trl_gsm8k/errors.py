"""Error types shared by several layers, kept below all of them so that raising one imports nothing else.

`LaunchError` is raised by the recipe reader (`config.py`), the checks before any weight loads (`checks.py`) and the
entry point (`train.py`), and caught by the tools that read recipes (the memory planner, the probe, the evaluator).
Errors raised by one module live in it (`memory.PlannerError`, `probe.ProbeError`, `generation.EvalError`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

_R = TypeVar("_R")


class LaunchError(ValueError):
    """A launch problem found before training starts, with its fix in the message."""


class NeedsGPU(LaunchError):
    """A setting this run cannot honour on the CPU (bf16 that would be emulated, fp16, bitsandbytes quantization,
    vLLM). ``flags`` are the command-line overrides that switch it off, e.g. ``{"bf16": "false"}``: the recipe reader
    adds the others a CPU smoke test of the same recipe needs and names them all in one message."""

    def __init__(self, message: str, flags: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.flags = dict(flags or {})


def error_line(error: BaseException) -> str:
    """The one line a command-line tool prints for a known error (and exits with status 1)."""
    return f"error: {error}"


def recorded(fn: Callable[..., _R], known: tuple[type[BaseException], ...]) -> Callable[..., _R]:
    """``fn`` under torch's ``@record``, with the ``known`` errors (those its CLI prints as one ``error:`` line)
    recorded as that line.

    Under torch's elastic agent (``accelerate launch`` with DeepSpeed, ``torchrun``) a failed worker is followed by the
    launcher's ``ChildFailedError`` report, whose "Root Cause" is read from the worker's ``TORCHELASTIC_ERROR_FILE``.
    ``@record`` writes nothing for a ``SystemExit`` (the report then says "To enable traceback see ...") and, for an
    exception, its traceback, which the report shows in place of the message. So a known error is written in the
    error file's plain-message form (the report prints it as is), and anything else keeps torch's traceback."""
    import json
    import time

    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler, record

    class OneLineErrors(ErrorHandler):
        def initialize(self) -> None:
            if self._get_error_file_path():  # torch's faulthandler set-up, only where a launcher reads the file
                super().initialize()

        def record_exception(self, e: BaseException) -> None:
            path = self._get_error_file_path()
            if path and isinstance(e, known):
                self._write_error_file(path, json.dumps({"message": error_line(e), "timestamp": int(time.time())}))
            else:
                super().record_exception(e)

    return record(fn, error_handler=OneLineErrors())
