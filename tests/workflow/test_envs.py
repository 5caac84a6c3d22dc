"""Static checks of the conda envs (envs/*.yaml) and of the rules' `conda:` directives.

Conda cannot be installed on these machines (docs: ENVIRONMENT.md), so `--use-conda` is never
exercised in CI. What can go wrong with an env file is checked here instead: it must parse,
pin exactly what pyproject.toml pins (the single source of versions), be named by the rules
that need it, and contain every third-party package the code of those rules imports — the
failure a user would otherwise meet only on a cluster, hours into a run.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
ENV_DIR = REPO / "envs"
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
ENV_FILES = sorted(ENV_DIR.glob("*.yaml"))
SHIM = REPO / "workflow" / "scripts" / "run_stage.py"
# conda-forge names that differ from the PyPI names pyproject.toml uses.
CONDA_TO_PYPI = {"pytorch": "torch"}
UNPINNED = {"python", "pip"}
CONDA_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)\s*(?P<spec>.*)$")
ACTIONS = ("script", "shell", "notebook", "wrapper", "cwl")


# ----------------------------------------------------------------------------- helpers
@cache
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@cache
def pyproject_pins() -> dict[str, SpecifierSet]:
    """Every requirement of pyproject.toml (core and extras) by canonical name."""
    project = pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {canonicalize_name(r.name): r.specifier for r in map(Requirement, reqs)}


def load_env(path: Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def env_requirements(env: dict) -> dict[str, str]:
    """Canonical PyPI name -> version spec text, from the conda and the pip dependencies."""
    found: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep.get("pip", []):
                req = Requirement(pip_dep)
                found[canonicalize_name(req.name)] = str(req.specifier)
            continue
        match = CONDA_SPEC.match(str(dep))
        assert match, f"{dep!r} is not a conda match spec"
        name = CONDA_TO_PYPI.get(match["name"], match["name"])
        found[canonicalize_name(name)] = match["spec"].strip()
    return found


def rule_blocks(path: Path) -> dict[str, str]:
    """Rule name -> its text, cut at the next statement that starts in column 0."""
    blocks: dict[str, str] = {}
    name, lines = None, []
    for line in path.read_text().splitlines():
        header = re.match(r"^(?:rule|checkpoint)\s+(\w+)\s*:", line)
        if header or (line[:1].strip() and not line.startswith("#")):
            if name:
                blocks[name] = "\n".join(lines)
            name, lines = (header.group(1), []) if header else (None, [])
            continue
        lines.append(line)
    if name:
        blocks[name] = "\n".join(lines)
    return blocks


@cache
def workflow_rules() -> dict[str, tuple[Path, str]]:
    """Every rule of workflow/rules/*.smk: name -> (file, text)."""
    rules: dict[str, tuple[Path, str]] = {}
    for path in RULE_FILES:
        for name, text in rule_blocks(path).items():
            assert name not in rules, f"rule {name} defined twice ({rules[name][0]} and {path})"
            rules[name] = (path, text)
    return rules


def directive_value(text: str, directive: str) -> str | None:
    """The string literal after `directive:` (same line or the next non-empty one)."""
    match = re.search(rf"^\s+{directive}:\s*(?:#.*)?\n?\s*(['\"])(?P<value>[^'\"]+)\1", text, re.MULTILINE)
    return match["value"] if match else None


def stage_param(text: str) -> str | None:
    """The `params: stage=` a rule hands to the shim (which pathfuse function it runs)."""
    match = re.search(r"\bstage\s*=\s*(['\"])(?P<value>[^'\"]+)\1", text)
    return match["value"] if match else None


def has_action(text: str) -> bool:
    return any(re.search(rf"^\s+{a}:", text, re.MULTILINE) for a in ACTIONS)


def rule_env(name: str) -> Path | None:
    """The env file a rule names, resolved like Snakemake does: relative to the rule's file."""
    path, text = workflow_rules()[name]
    value = directive_value(text, "conda")
    return (path.parent / value).resolve() if value else None


# -- imports of the code a rule runs
def _module_file(module: str) -> Path | None:
    base = REPO / "src" / Path(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def _imports(path: Path, package: str) -> tuple[set[str], set[str]]:
    """(pathfuse modules, third-party top-level names) imported anywhere in a file."""
    inner, outer = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            names = [f"{base}.{node.module}" if node.module else base]
            names += [f"{names[0]}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] == "pathfuse":
                if _module_file(name):
                    inner.add(name)
            elif name.split(".")[0] not in sys.stdlib_module_names:
                outer.add(name.split(".")[0])
    return inner, outer


def third_party_imports(entry_files: list[Path], modules: list[str]) -> set[str]:
    """Top-level third-party names imported by the files and pathfuse modules, transitively.

    Imports inside functions count too (a lazy import still has to succeed when called).
    """
    found: set[str] = set()
    seen: set[str] = set()
    todo = [(path, "pathfuse") for path in entry_files] + [_located(m) for m in modules]
    while todo:
        inner, outer = _imports(*todo.pop())
        found |= outer
        todo += [_located(m) for m in inner - seen]
        seen |= inner
    return found


def _located(module: str) -> tuple[Path, str]:
    """A module's file and the package its relative imports start from."""
    path = _module_file(module)
    return path, module if path.name == "__init__.py" else module.rpartition(".")[0]


@cache
def provided_by(name: str) -> frozenset[str]:
    """A distribution and everything it requires, per this venv's metadata.

    conda-forge packages carry the same run requirements, so the venv stands in for the envs.
    """
    seen, todo = set(), [canonicalize_name(name)]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            requires = metadata.requires(current) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return frozenset(seen)


# ----------------------------------------------------------------------------- tests
def test_there_are_envs_and_rules():
    assert {p.name for p in ENV_FILES} >= {"slides.yaml", "torch.yaml", "report.yaml"}
    assert workflow_rules(), f"no rules found in {REPO / 'workflow' / 'rules'}"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_file_parses(env_file: Path):
    env = load_env(env_file)
    assert env["name"] == f"pathfuse-{env_file.stem}"
    assert env["channels"][0] == "conda-forge", "conda-forge first: every package is built there"
    assert "defaults" not in env["channels"], "mixing defaults with conda-forge breaks solves"
    requirements = env_requirements(env)
    assert "python" in requirements
    for name, spec in requirements.items():
        if name == "python":
            continue
        SpecifierSet(spec)  # raises on a malformed version spec


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_match_pyproject(env_file: Path):
    """pyproject.toml chooses the versions; an env may only repeat them."""
    pins = pyproject_pins()
    wrong = []
    for name, spec in env_requirements(load_env(env_file)).items():
        if name in UNPINNED:
            continue
        if name not in pins:
            wrong.append(f"{name}: not in pyproject.toml; add it there first")
        elif SpecifierSet(spec) != pins[name]:
            wrong.append(f"{name}: env has {spec!r}, pyproject.toml has {str(pins[name])!r}")
    assert not wrong, f"{env_file.name}:\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_python_satisfies_requires_python(env_file: Path):
    python = env_requirements(load_env(env_file))["python"].lstrip("=")
    assert Version(python) in SpecifierSet(pyproject()["project"]["requires-python"])


def test_every_rule_with_an_action_names_an_existing_env():
    problems = []
    for name, (path, text) in workflow_rules().items():
        if not has_action(text):
            continue  # pure aggregation rules (no job to run) need no env
        env = rule_env(name)
        if env is None:
            problems.append(f"{path.name}: rule {name} has no `conda:` directive")
        elif not env.is_file():
            problems.append(f"{path.name}: rule {name} names {env}, which does not exist")
        elif env.parent != ENV_DIR:
            problems.append(f"{path.name}: rule {name} names {env}, outside envs/")
    assert not problems, "\n".join(problems)


def test_every_env_is_used():
    used = {rule_env(name) for name in workflow_rules()}
    unused = [p.name for p in ENV_FILES if p.resolve() not in used]
    assert not unused, f"env files no rule names: {unused}"


def test_each_env_has_what_its_rules_import():
    """The code a rule runs (its stage function, transitively, plus the shim) finds its imports in the rule's env.

    Every third-party import must be listed there, directly or as a dependency of what is listed.
    """
    from pathfuse.cli import STAGES

    to_distribution = metadata.packages_distributions()
    problems = []
    for name, (_path, text) in workflow_rules().items():
        stage, env = stage_param(text), rule_env(name)
        if not has_action(text) or env is None or stage is None:
            continue
        if stage not in STAGES:
            problems.append(f"rule {name}: stage {stage!r} is not in pathfuse.cli.STAGES")
            continue
        module = STAGES[stage].target.split(":")[0]
        if _module_file(module) is None:
            problems.append(f"rule {name}: its stage's module {module} does not exist")
            continue
        listed = env_requirements(load_env(env))
        provided = set().union(*(provided_by(d) for d in listed))
        for top in sorted(third_party_imports([SHIM], [module])):
            dists = {canonicalize_name(d) for d in to_distribution.get(top, [])}
            if dists and not dists & provided:
                problems.append(f"rule {name}: imports {top}, but {env.name} lacks {', '.join(sorted(dists))}")
    assert not problems, "\n".join(problems)
