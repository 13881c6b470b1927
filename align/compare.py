"""``align compare`` under its old name: the code lives in align/eval/ (compare, logratio, judges, report, plots).

Kept so that ``align.compare.<name>`` keeps working for recipes, scripts and notebooks written against it; align's
own modules import from align/eval/.
"""

from align.eval.compare import (
    BON_PREFIX,
    CompareConfig,
    best_of_n_kl_bound,
    generate,
    kl_to_reference,
    load_pairs,
    load_prompt_records,
    parse_best_of_n,
    run_compare,
)
from align.eval.judges import judge_scores, load_judge
from align.eval.logratio import implicit_margins, response_logratio
from align.eval.plots import kl_shown, write_plots
from align.eval.report import build_report, render_markdown, write_report

__all__ = [
    "BON_PREFIX",
    "CompareConfig",
    "best_of_n_kl_bound",
    "build_report",
    "generate",
    "implicit_margins",
    "judge_scores",
    "kl_shown",
    "kl_to_reference",
    "load_judge",
    "load_pairs",
    "load_prompt_records",
    "parse_best_of_n",
    "render_markdown",
    "response_logratio",
    "run_compare",
    "write_plots",
    "write_report",
]
