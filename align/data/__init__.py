"""Preference and SFT data: formats, validation, splits, data cards."""
