"""PPO for language models with LoRA, a critic and a reward model or reward function: align's own loop.

    align ppo recipes/tiny/ppo.yaml
    accelerate launch -m align ppo recipes/smollm2-135m/ppo.yaml ppo.num_iterations=20
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m align ppo recipes/tiny/ppo.yaml

(Two processes on a CPU need that last form: with accelerate 1.15, ``--cpu --num_processes 2`` starts one process
unless mpirun is installed.)

TRL removed its PPOTrainer, so this stage is written on torch + peft + accelerate; the maths (KL estimators, GAE,
clipped losses, KL controllers, running moments) lives in :mod:`align.stages.ppo.losses` and is tested there. One
iteration:

1. rollout: each process takes its own shard of the seeded prompt order and samples responses with the KV cache
   on (left-padded prompts, temperature/top_p, stop at EOS); a response ends after its first EOS, which stays a
   response token;
2. scoring: the reward model scores prompt+response ids (re-tokenized with the reward model's own tokenizer and
   template when its vocabulary or template differs from the policy's, docs/faults.md #17) or a ``module:function``
   reward scores the texts; then the missing-EOS penalty, normalisation and clipping;
3. per-token rewards (KL to the reference on every token, score on the last), GAE over the critic's values,
   optional advantage whitening;
4. ``ppo_epochs`` over shuffled minibatches with gradient accumulation: clipped policy loss + ``vf_coef`` * clipped
   value loss - ``entropy_coef`` * entropy, gradient clipping, AdamW over the LoRA and value-head parameters.

The critic (``ppo.value_model``) is a linear value head on the policy's own last hidden state (``head``: one forward,
a shared backbone), or a second LoRA adapter on the same base weights with its own value head (``adapter``: a
separate critic, one more forward per step; it can start as the reward model, adapter and score head). With a
critic adapter the policy's and the critic's gradients are clipped apart.

One copy of the base weights serves policy and reference: the reference is the same model with the LoRA adapter
disabled (``reference: sft`` merges the ``init_from`` adapter into the base first; ``reference: base`` keeps
training the ``init_from`` adapter itself). Dropout is off throughout (the model stays in eval mode), as in TRL's
PPO, so the first minibatch of every iteration has probability ratio exactly 1.

Run directory: ``config.yaml``, ``manifest.json``, ``metrics.jsonl`` (one row per iteration), ``samples.jsonl``,
``checkpoints/checkpoint-<iteration>/`` (written under a temporary name, renamed when complete, ``state.json``
last) and ``model/`` (policy adapter, value head, tokenizer, chat template, and ``critic/``: the critic adapter).

The package: ``recipe`` (settings), ``rewards`` (programmatic rewards), ``rollout`` (experience), ``policy`` (policy,
value head, critic adapter), ``losses`` (the maths), ``checkpoint`` (checkpoint and RNG IO), ``trainer`` (the loop)
and ``stage`` (``run``: plan, resume, record, card). Every name tests and recipes use stays importable from here,
e.g. ``reward_fn: align.stages.ppo:reward_contains``.
"""

from align.eval.generation import left_pad  # re-exported: tests pad with it from here
from align.reward_models import (  # re-exported: tests and recipes use these from here
    RewardModelScorer,
    needs_retokenization,
    resolve_reward_model_dir,
    retokenize_for_reward_model,
    tokenizer_fingerprint,
)
from align.stages.ppo import losses
from align.stages.ppo.checkpoint import checkpoint_dirs, find_checkpoint
from align.stages.ppo.policy import (
    PolicyWithValue,
    adapter_active,
    add_value_adapter,
    build_policy,
    hidden_size,
    init_value_head,
    policy_weights,
)
from align.stages.ppo.recipe import (
    ADAPTER_WEIGHTS,
    CRITIC_DIR,
    REFERENCES,
    REWARD_NORMALIZATIONS,
    STATE_FILE,
    VALUE_ADAPTER,
    VALUE_INITS,
    VALUE_MODELS,
    PPOSection,
    Recipe,
)
from align.stages.ppo.rewards import ProgrammaticReward, reward_contains, reward_short
from align.stages.ppo.rollout import (
    Rollout,
    leading_pad_columns,
    position_ids_from_mask,
    prompt_indices,
    response_mask,
)
from align.stages.ppo.stage import run
from align.stages.ppo.trainer import PPOTrainer
from align.stages.resume import is_complete_checkpoint

pm = losses  # the name the single-module ppo.py gave its maths

__all__ = [
    "left_pad",
    "ADAPTER_WEIGHTS",
    "CRITIC_DIR",
    "PPOSection",
    "PPOTrainer",
    "PolicyWithValue",
    "ProgrammaticReward",
    "REFERENCES",
    "REWARD_NORMALIZATIONS",
    "Recipe",
    "RewardModelScorer",
    "Rollout",
    "STATE_FILE",
    "VALUE_ADAPTER",
    "VALUE_INITS",
    "VALUE_MODELS",
    "adapter_active",
    "add_value_adapter",
    "build_policy",
    "checkpoint_dirs",
    "find_checkpoint",
    "hidden_size",
    "init_value_head",
    "is_complete_checkpoint",
    "leading_pad_columns",
    "losses",
    "needs_retokenization",
    "pm",
    "policy_weights",
    "position_ids_from_mask",
    "prompt_indices",
    "resolve_reward_model_dir",
    "response_mask",
    "retokenize_for_reward_model",
    "reward_contains",
    "reward_short",
    "run",
    "tokenizer_fingerprint",
]
