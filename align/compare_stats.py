"""The comparison statistics under their old name: the code lives in align/eval/ (bootstrap, winrate, pass_rates,
stats). Kept so that ``align.compare_stats.<name>`` keeps working; align's own modules import from align/eval/."""

from align.eval.bootstrap import mean_with_ci
from align.eval.pass_rates import mcnemar, pass_rate, wilson_interval
from align.eval.stats import distinct_n, implicit_reward_accuracy, sample_kl, self_judging_warning
from align.eval.winrate import length_controlled_win_rate, win_rate, win_rate_ci, win_rate_matrix

__all__ = [
    "distinct_n",
    "implicit_reward_accuracy",
    "length_controlled_win_rate",
    "mcnemar",
    "mean_with_ci",
    "pass_rate",
    "sample_kl",
    "self_judging_warning",
    "wilson_interval",
    "win_rate",
    "win_rate_ci",
    "win_rate_matrix",
]
