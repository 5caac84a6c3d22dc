"""Build hook: ship the Snakemake workflow inside the package, so an installed pathfuse runs it.

``pip install .`` (not editable) copies the Snakefile and the folders it reads (``workflow/``,
``envs/``, ``config/``) into ``pathfuse/bundled_workflow/`` of the wheel, laid out as in the
repository so every relative path inside them still holds. ``pathfuse workflow-path`` prints
where that Snakefile is (or the clone's, for an editable install). Everything else about the
build is in pyproject.toml.
"""

import shutil
from pathlib import Path

# setuptools ships no type information here and types-setuptools is not a test dependency.
from setuptools import setup  # type: ignore[import-untyped]
from setuptools.command.build_py import build_py  # type: ignore[import-untyped]

WORKFLOW_FILES = ("Snakefile", "workflow", "envs", "config")


class BuildWithWorkflow(build_py):
    """``build_py`` that also copies the workflow files into the built package."""

    def run(self) -> None:
        """Build the package as usual, then replace its ``bundled_workflow/`` with fresh copies."""
        super().run()
        target = Path(self.build_lib) / "pathfuse" / "bundled_workflow"
        shutil.rmtree(target, ignore_errors=True)
        for name in WORKFLOW_FILES:
            source = Path(name)
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildWithWorkflow})
