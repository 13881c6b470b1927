"""Evaluation: objective checks, comparison statistics, generation and judges."""
