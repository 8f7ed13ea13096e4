"""Packaging: compatible ranges in pyproject.toml, exact pins in constraints.txt, and the install commands that use
them (README, .ci/run, Dockerfile). That the ranges resolve on Python 3.12 and 3.13 is checked by .ci/resolve-check,
which .ci/run runs (it needs the package index); docs/packaging.md has its recorded output."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([0-9][0-9A-Za-z.!]*)", line.strip())
        assert match, f"constraints.txt: {line!r} is not name==version (no local label such as +cpu)"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = match.group(2)
    return pins


def test_requires_python_admits_3_11_to_3_13_without_an_upper_bound():
    requires = SpecifierSet(_project()["requires-python"])
    assert all(v in requires for v in ("3.11.0", "3.12.0", "3.13.0"))
    assert "3.10.0" not in requires
    assert not any(s.operator in ("<", "<=", "==", "~=") for s in requires), requires


def test_runtime_dependencies_are_ranges_with_tested_lower_bounds():
    pins = _constraints()
    for line in _project()["dependencies"]:
        requirement = Requirement(line)
        operators = {s.operator for s in requirement.specifier}
        assert ">=" in operators, f"{requirement}: no lower bound"
        assert not operators & {"==", "===", "~="}, f"{requirement}: an exact pin (those belong in constraints.txt)"
        # the lower bound is at most the tested version, which the range admits
        assert pins[canonicalize_name(requirement.name)] in requirement.specifier, requirement


def test_constraints_pin_every_requirement_within_its_range():
    pins = _constraints()
    project = _project()
    for line in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {name}"
        assert pins[name] in requirement.specifier, f"constraints.txt's {name}=={pins[name]} is outside {requirement}"


def test_constraints_are_what_the_environment_installs():
    """constraints.txt is .ci/freeze-constraints's output for this environment: CI's venv, installed with
    `-c constraints.txt`, holds exactly these versions and nothing that the file leaves unpinned."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("constraints.txt pins the Python 3.11 set")
    made = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "freeze-constraints")], capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    pins = _constraints()
    frozen = {canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)$", made.stdout, re.M)}
    fix = "reinstall with `pip install -c constraints.txt -e '.[test]'`, or regenerate (docs/packaging.md)"
    assert sorted(set(frozen) - set(pins)) == [], f"installed but not pinned: {fix}"
    assert sorted(set(pins) - set(frozen)) == [], f"pinned but not needed: {fix}"
    assert {n: (pins[n], v) for n, v in frozen.items() if pins[n] != v} == {}, f"versions differ: {fix}"


def _readme_test_command() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"Install and run the tests:\s*```bash\n(.+?)\n```", readme, re.S)
    assert match, "README: no test command"
    (command,) = match.group(1).strip().splitlines()
    return command


def test_ci_runs_the_readme_test_command_with_the_constraints():
    command = _readme_test_command()
    assert "pip install -q -c constraints.txt -e '.[test]'" in command and command.endswith("python -m pytest")
    ci = (REPO / ".ci" / "run").read_text()
    assert command in ci.splitlines()
    # the resolve check for 3.12 and 3.13 runs before the tests, so pytest's summary closes the output
    assert ci.index(".ci/resolve-check") < ci.index(command)
    demo = re.search(r"```bash\n(python3 -m venv .venv .+ screening demo)\n```", (REPO / "README.md").read_text())
    assert demo and "pip install -c constraints.txt -e ." in demo.group(1)


def test_readme_says_how_to_install_a_cpu_only_torch():
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in (REPO / "README.md").read_text()
