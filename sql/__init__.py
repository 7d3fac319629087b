"""Marks sql/ as the package `litmus._sql` (see pyproject.toml), so `importlib.resources` finds
the SQL files in an editable install and in a wheel alike. Nothing to import here."""
