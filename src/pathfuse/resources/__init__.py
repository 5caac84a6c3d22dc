"""Files pathfuse ships with: JSON Schemas, the task and encoder registries, the workflow itself.

They are package data, found through :mod:`importlib.resources`, so a non-editable install
validates configs and runs the workflow from any folder. In a clone (editable install or the
Snakefile's ``src`` on ``sys.path``) the workflow is the clone's own; an installed wheel carries
a copy laid out like the repository (``bundled_workflow/``, made by setup.py).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: The repository root when pathfuse runs from a clone (src/pathfuse/resources → three up).
_CLONE = Path(__file__).resolve().parents[3]


def _path(*parts: str) -> Path:
    return Path(str(files(__name__).joinpath(*parts)))


def schema(name: str) -> Path:
    """A JSON Schema (``config``, ``tasks``, ``encoders`` or ``sections/<stage>``) as YAML."""
    return _path("schemas", f"{name}.schema.yaml")


def registry(name: str) -> Path:
    """The packaged registry ``tasks`` or ``encoders`` (what a config without ``registries`` uses)."""
    return _path(f"{name}.yaml")


def _workflow_root() -> Path:
    bundled = Path(str(files("pathfuse").joinpath("bundled_workflow")))
    if (bundled / "Snakefile").is_file():
        return bundled.resolve()
    if (_CLONE / "Snakefile").is_file():
        return _CLONE
    raise FileNotFoundError("pathfuse's workflow files are not installed: reinstall with `pip install .` "
                            "(a wheel carries them) or run from a clone of the repository")


def snakefile() -> Path:
    """The Snakefile to run (``snakemake -s "$(pathfuse workflow-path)"``)."""
    return _workflow_root() / "Snakefile"


def demo_config() -> Path:
    """The demo run config: ``config/config.yaml`` of the current folder if there is one, else the shipped one."""
    local = Path("config") / "config.yaml"
    return local if local.is_file() else _workflow_root() / "config" / "config.yaml"
