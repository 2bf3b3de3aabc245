"""GRPO on GSM8K with Hugging Face TRL.

Pipeline: data → answers → rewards → advantages → trainer → train / evaluate.
"""

from importlib.metadata import version

__version__ = version("trl-gsm8k")  # setup.cfg is its one home
