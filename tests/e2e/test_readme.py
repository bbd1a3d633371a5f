"""What the README's set-up, tour and image/chart sections claim, checked where a machine can:
the Python it names is the one pyproject.toml requires, every command of the tour exists and is
reachable after the set-up command, the image the README builds is the chart's default image,
and its chart commands (Helm's engine through helm-python-sdk) run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from click.testing import CliRunner

from bridge.cli import main

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def commands(block: str) -> list[list[str]]:
    return [shlex.split(line.split("  #", 1)[0]) for line in block.splitlines() if line.strip()
            and not line.startswith("#")]


def test_the_python_it_names_is_the_one_pyproject_requires():
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required.startswith(">=")
    setup = section("Two commands")
    assert f"Python {required[2:]} or later" in setup
    assert "python3-venv" in setup
    # .ci/test installs Debian packages: the README says it needs root, and gives a route without it.
    assert "root" in setup and "sudo" in setup
    [unit] = [b for b in blocks(setup) if "pytest tests/unit" in b]
    [cmd] = commands(unit)
    assert cmd[:3] == ["python3", "-m", "venv"] and ".[test]" in cmd and cmd[-3:] == ["-m", "pytest", "tests/unit"]
    assert "test" in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert (REPO / "tests" / "unit").is_dir()


def test_every_tour_command_exists_and_is_reachable_after_the_setup_command():
    setup_cmd = blocks(section("Two commands"))[0]
    assert ".venv/bin/pip install ." in setup_cmd  # what puts monbridge into .venv/bin
    tour = section("A short tour")
    [block] = blocks(tour)
    lines = commands(block)
    # monbridge is not on PATH after the set-up: the tour activates .venv first (or calls .venv/bin/monbridge).
    assert lines[0][:2] == [".", ".venv/bin/activate"] or all(c[0] == ".venv/bin/monbridge" for c in lines)
    calls = [c for c in lines if c[0] in ("monbridge", ".venv/bin/monbridge")]
    assert len(calls) >= 5
    runner = CliRunner()
    for call in calls:
        words = [w for w in call[1:] if not w.startswith("-") and w != ">"]
        path: list[str] = []
        group = main
        for w in words:  # the subcommand path: as deep as the CLI's groups go
            sub = group.get_command(None, w) if hasattr(group, "get_command") else None  # type: ignore[arg-type]
            if sub is None:
                break
            path.append(w)
            group = sub
        assert path, f"{call}: no such command"
        out = runner.invoke(main, [*path, "--help"])
        assert out.exit_code == 0, (call, out.output)
        for option in (w.split("=")[0] for w in call[1:] if w.startswith("--")):
            assert option in out.output, f"{call}: {' '.join(path)} has no {option}"


def test_the_image_the_readme_builds_is_the_charts_default_image():
    values = yaml.safe_load((REPO / "helm" / "monbridge" / "values.yaml").read_text())
    chart = yaml.safe_load((REPO / "helm" / "monbridge" / "Chart.yaml").read_text())
    image = f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
    text = section("The container image and the Helm chart")
    assert values["image"]["repository"] in text
    builds = [c for b in blocks(text) for c in commands(b) if c[:2] in (["docker", "build"], ["podman", "build"])]
    assert {c[0] for c in builds} == {"docker", "podman"}
    for c in builds:
        assert c[c.index("-t") + 1] == image, c
        assert (REPO / c[c.index("-f") + 1]).is_file() and c[-1] == "."
    runs = [c for b in blocks(text) for c in commands(b) if c[:2] == ["docker", "run"]]
    assert runs and all(image in c for c in runs)
    assert f"-t {image} ." in (REPO / "helm" / "Dockerfile").read_text()  # the Dockerfile's own usage line


def test_the_chart_commands_without_the_helm_cli_run():
    text = section("The container image and the Helm chart")
    snippets = [c for b in blocks(text) for c in commands(b) if c[:2] == [".venv/bin/python", "-c"]]
    assert len(snippets) == 2
    outputs = []
    for c in snippets:
        out = subprocess.run([sys.executable, "-c", c[2]], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout)
    assert '"errors": []' in outputs[0]
    rendered = [d for part in outputs[1].split("---") if "\nkind: " in "\n" + part
                for d in yaml.safe_load_all(part) if d]
    assert {d["kind"] for d in rendered} >= {"DaemonSet", "ConfigMap", "Service"}
    [ds] = [d for d in rendered if d["kind"] == "DaemonSet"]
    values = yaml.safe_load((REPO / "helm" / "monbridge" / "values.yaml").read_text())
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"].startswith(values["image"]["repository"] + ":")
    helm_commands = [c for b in blocks(text) for c in commands(b) if c[0] == "helm"]
    assert [c[1] for c in helm_commands] == ["lint", "template", "install"]
    assert all("helm/monbridge" in c for c in helm_commands)

