"""The command layer: argument handling and printing for ``align`` (``align.cli`` builds the parser and dispatches).

Nothing below this package imports it (the ``layers`` contract in pyproject.toml, checked by ``lint-imports``).
"""
