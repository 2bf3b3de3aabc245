"""GRPO on GSM8K with Hugging Face TRL.

Pipeline: data → answers → rewards → advantages → sampling → trainer → train / evaluate / probe.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trl-gsm8k")  # setup.cfg is its one home
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
