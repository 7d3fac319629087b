"""Marks ui/ as the package `litmus._ui` (see pyproject.toml), so `importlib.resources` finds
the screens in an editable install and in a wheel alike. Nothing to import here."""
