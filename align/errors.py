"""The exceptions a user can cause, under one base class.

Everything that derives from :class:`UserError` is something the person running align can fix (a recipe key, a
data row, a template, a model reference, a learning rate that diverges). The ``align`` command prints such an error
as one paragraph — what went wrong, where (option, file, row or line) and what to do — and exits with code 2,
without a traceback (``ALIGN_DEBUG=1`` shows it). Any other exception is a bug in align or a library and keeps its
traceback.

Each subclass also keeps the built-in base it had before (``ValueError`` or ``RuntimeError``), so code that caught
those still does, and each stays importable where it was defined before (``align.config.ConfigError``,
``align.data.spec.DataError``, ...).
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every error a user can fix; its message is the whole explanation."""


class ConfigError(UserError, ValueError):
    """A recipe or override is wrong; the message names the key and says what to do."""


class DataError(UserError, ValueError):
    """Bad data or data configuration; the message names the row or option and says how to fix it."""


class AgreementGateError(UserError, ValueError):
    """Annotator agreement is below the recipe's threshold and the recipe says to stop."""


class TemplateError(UserError, ValueError):
    """The chat template or tokenizer is set up wrong; the message says how to fix the recipe."""


class ModelError(UserError, RuntimeError):
    """A model reference could not be resolved or obtained; the message says what to do."""


class NonFiniteError(UserError, RuntimeError):
    """Training diverged: too many optimizer steps in a row had a non-finite loss or gradient."""


class NoGradientError(UserError, RuntimeError):
    """Trainable parameters got no gradient (wrong LoRA targets, checkpointing without input grads)."""


class ReferenceCheckError(UserError, RuntimeError):
    """DPO's step-0 check found that the reference model is not the policy's starting point."""


class TrackerError(UserError, RuntimeError):
    """An experiment tracker (wandb) refused to start: bad key, no network, or a wrong setting."""
