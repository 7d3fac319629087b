"""Where the SQL (`sql/`) and the web UI (`ui/`) that ship inside Litmus are on disk."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SQL_PACKAGE = "litmus._sql"
UI_PACKAGE = "litmus._ui"


def data_dir(package: str) -> Path:
    """The folder of a data package (`litmus._sql`, `litmus._ui`) as a real directory."""
    # pyproject.toml maps sql/ and ui/ into the package, so the same lookup works in a wheel
    # (site-packages/litmus/_sql) and in an editable install (the checkout's sql/, where a new
    # migration is seen without reinstalling). aiohttp's static route and the migration glob
    # need a folder on disk: pip always unpacks wheels, so files() is a Path; a zipped Litmus
    # is refused here rather than extracted to a temporary folder behind the server's back.
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        # An editable install made before pyproject.toml mapped sql/ and ui/ knows only litmus/.
        raise RuntimeError(
            f"{package} is not installed: reinstall Litmus (make install, or pip install -e .)"
        ) from None
    if not isinstance(root, Path) or not root.is_dir():
        raise RuntimeError(
            f"{package} is not a folder on disk ({root!r}): install Litmus with pip, unzipped"
        )
    return root
