"""Moved to ``align.runs`` (run directories and the weights in them); these names stay importable here."""

from align.runs import load_policy, merge_chain, merged_chain_of, read_stage_manifest, stage_dir_of

__all__ = ["load_policy", "merge_chain", "merged_chain_of", "read_stage_manifest", "stage_dir_of"]
