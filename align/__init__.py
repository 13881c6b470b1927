"""align: an alignment post-training pipeline (SFT, reward model, DPO, PPO with LoRA).

Importing the package does no work: submodules load torch/transformers only when used.
"""

__version__ = "0.1.0"
