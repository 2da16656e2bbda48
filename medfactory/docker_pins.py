"""Check that the Docker image installs exactly the project's pins.

`check_dockerfile_pins` reads `docker/Dockerfile` and compares it with `constraints.txt` and
`pyproject.toml`:

- every `pip install` installs with `-c constraints.txt` and from the default index (an
  `--index-url` would swap torch's CUDA build);
- every explicit `pkg==x.y.z` equals the project's pin (constraints.txt, pyproject's
  dependencies and extras), or, for a package only the image installs, `IMAGE_ONLY_PINS`;
  a requirement without `==` is a finding;
- an extra installed as `".[name]"` exists in pyproject;
- the CUDA major.minor of the `nvidia/cuda` base image equals torch's CUDA build, read from
  constraints.txt (`cuda-toolkit`, else `nvidia-cuda-runtime`, the wheels torch's CUDA build
  depends on).

`check_compose_pins` checks that `docker/compose.yaml` builds that Dockerfile and tags the
image with the project's version. Both return a list of findings (empty when all agree),
each naming the file, the line and both versions.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import yaml

# Packages the image may install that the project itself does not pin (they are not in
# constraints.txt, which is measured on CPU machines). Each needs its reason.
IMAGE_ONLY_PINS: dict[str, str] = {
    # Optional (build arg FLASH_ATTN=1), built from source: no wheel exists for torch 2.11 + CUDA 13.0.
    "flash-attn": "2.8.3",
    # flash-attn builds with --no-build-isolation and Ubuntu 24.04's venv ships no setuptools.
    "setuptools": "80.9.0",
}

# Distributions whose version gives the CUDA build of torch's wheels, best first.
CUDA_SOURCES = ("cuda-toolkit", "nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12")

_OPTIONS_WITH_VALUE = {
    "-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "--extra-index-url",
    "-f", "--find-links", "-e", "--editable", "-t", "--target", "--prefix", "--root",
    "--platform", "--python-version", "--implementation", "--abi", "--no-binary",
    "--only-binary", "--upgrade-strategy", "-C", "--config-settings", "--progress-bar",
    "--src", "--trusted-host", "--cache-dir", "--log", "--timeout", "--retries", "--proxy",
}
_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", "then", "else", "elif", "fi", "do", "done"}
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(===|==|>=|<=|~=|!=|<|>)?\s*(\S*)$")
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")
_CUDA_IMAGE = re.compile(r"^(?:[\w.:-]+/)?nvidia/cuda:(\d+)\.(\d+)(?:\.(\d+))?-")
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def normalize(name: str) -> str:
    """PEP 503 name: `Flash_Attn` and `flash-attn` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_constraints(constraints: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in constraints.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def read_pyproject_pins(pyproject: Path) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """{package: (version, where)} for every `==` pin of the dependencies and extras, and the extras' names."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    pins: dict[str, tuple[str, str]] = {}
    groups = [("dependencies", project.get("dependencies", []))]
    extras = project.get("optional-dependencies", {})
    groups += [(f"optional-dependencies.{name}", requirements) for name, requirements in extras.items()]
    for where, requirements in groups:
        for requirement in requirements:
            match = _PIN.match(requirement)
            if match:
                pins[normalize(match.group(1))] = (match.group(2), where)
    return pins, set(extras)


def dockerfile_instructions(dockerfile: Path) -> list[tuple[int, str, str]]:
    """(first line number, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[int, str, str]] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(dockerfile.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # a comment line inside a continued instruction
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1])
            continue
        buffer.append(stripped)
        text = " ".join(buffer)
        buffer = []
        keyword, _, arguments = text.partition(" ")
        instructions.append((start, keyword.upper(), arguments.strip()))
    return instructions


def _substitute(text: str, variables: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def _pip_installs(command: str) -> list[list[str]]:
    """The argument lists of every `pip install` in a shell command."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    installs: list[list[str]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        is_pip = re.fullmatch(r"(?:.*/)?pip3?(?:\.\d+)?", token) is not None
        if token == "-m" and index + 1 < len(tokens) and tokens[index + 1] == "pip":
            index += 1
            is_pip = True
        if is_pip and index + 1 < len(tokens) and tokens[index + 1] == "install":
            arguments: list[str] = []
            index += 2
            while index < len(tokens) and tokens[index] not in _SEPARATORS:
                arguments.append(tokens[index])
                index += 1
            installs.append(arguments)
            continue
        index += 1
    return installs


def _cuda_of_torch(constraints_pins: dict[str, str]) -> tuple[str, str] | None:
    for source in CUDA_SOURCES:
        if source in constraints_pins:
            major, minor = constraints_pins[source].split(".")[:2]
            return f"{major}.{minor}", f"{source}=={constraints_pins[source]}"
    return None


def check_dockerfile_pins(dockerfile: Path, constraints: Path, pyproject: Path) -> list[str]:
    """Every way the Dockerfile's versions differ from the project's pins, one message each."""
    constraints_pins = read_constraints(constraints)
    pyproject_pins, extras = read_pyproject_pins(pyproject)
    findings: list[str] = []
    variables: dict[str, str] = {}
    saw_base = False
    saw_install = False

    for line, keyword, arguments in dockerfile_instructions(dockerfile):
        where = f"{dockerfile.name}:{line}"
        if keyword in ("ARG", "ENV"):
            for assignment in shlex.split(arguments):
                name, equals, value = assignment.partition("=")
                if equals:
                    variables.setdefault(name, _substitute(value, variables))
            continue
        if keyword == "FROM":
            image = _substitute(arguments.split()[0], variables)
            match = _CUDA_IMAGE.match(image)
            if match is None:
                continue
            saw_base = True
            image_cuda = f"{match.group(1)}.{match.group(2)}"
            torch_cuda = _cuda_of_torch(constraints_pins)
            torch_pin = constraints_pins.get("torch", "unpinned")
            if torch_cuda is None:
                findings.append(
                    f"{where}: base image {image} is CUDA {image_cuda}, but {constraints.name} pins none of "
                    f"{', '.join(CUDA_SOURCES)}, so torch=={torch_pin}'s CUDA build is unknown"
                )
            elif torch_cuda[0] != image_cuda:
                findings.append(
                    f"{where}: base image {image} is CUDA {image_cuda}, but torch=={torch_pin} is the CUDA "
                    f"{torch_cuda[0]} build ({constraints.name}: {torch_cuda[1]})"
                )
            continue
        if keyword != "RUN":
            continue
        for install in _pip_installs(_substitute(arguments, variables)):
            saw_install = True
            findings.extend(_check_install(where, install, constraints, constraints_pins, pyproject, pyproject_pins, extras))

    if not saw_base:
        findings.append(f"{dockerfile.name}: no `FROM nvidia/cuda:<major>.<minor>...` base image to check against torch's CUDA build")
    if not saw_install:
        findings.append(f"{dockerfile.name}: no `pip install` found: the image does not install the project's pins")
    return findings


def _check_install(
    where: str,
    arguments: list[str],
    constraints: Path,
    constraints_pins: dict[str, str],
    pyproject: Path,
    pyproject_pins: dict[str, tuple[str, str]],
    extras: set[str],
) -> list[str]:
    findings: list[str] = []
    constrained = False
    requirements: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        option, equals, inline_value = argument.partition("=")
        if argument.startswith("-") and (option in _OPTIONS_WITH_VALUE or argument in _OPTIONS_WITH_VALUE):
            if equals and option in _OPTIONS_WITH_VALUE:
                name, value = option, inline_value
            else:
                name = argument
                index += 1
                value = arguments[index] if index < len(arguments) else ""
            if name in ("-c", "--constraint") and Path(value).name == constraints.name:
                constrained = True
            if name in ("-i", "--index-url", "--extra-index-url", "-f", "--find-links"):
                findings.append(
                    f"{where}: pip install {name} {value}: installs from outside the package registry "
                    f"{constraints.name} was measured on (torch's CUDA build could differ)"
                )
        elif argument.startswith("-"):
            pass  # a flag without a value (--no-build-isolation, -U, ...)
        else:
            requirements.append(argument)
        index += 1

    if not constrained:
        findings.append(
            f"{where}: pip install {' '.join(arguments)}: missing `-c {constraints.name}`, so versions "
            f"the project does not pin directly are not the project's lock"
        )
    for requirement in requirements:
        findings.extend(_check_requirement(where, requirement, constraints, constraints_pins, pyproject, pyproject_pins, extras))
    return findings


def _check_requirement(
    where: str,
    requirement: str,
    constraints: Path,
    constraints_pins: dict[str, str],
    pyproject: Path,
    pyproject_pins: dict[str, tuple[str, str]],
    extras: set[str],
) -> list[str]:
    local = re.match(r"^(\.{1,2}(?:/[^\[]*)?|/[^\[]*)(?:\[([^\]]*)\])?$", requirement)
    if local:
        missing = [extra for extra in (local.group(2) or "").split(",") if extra.strip() and extra.strip() not in extras]
        return [f"{where}: {requirement}: extra {extra!r} is not in {pyproject.name}'s optional-dependencies" for extra in missing]
    match = _REQUIREMENT.match(requirement)
    if match is None:
        return [f"{where}: cannot read the requirement {requirement!r}"]
    name, operator, version = normalize(match.group(1)), match.group(3), match.group(4)
    if operator != "==" or not version:
        return [f"{where}: {requirement} is not pinned: write {name}==<version> with the project's pin"]

    expected: list[tuple[str, str]] = []
    if name in constraints_pins:
        expected.append((constraints_pins[name], constraints.name))
    if name in pyproject_pins:
        pin, group = pyproject_pins[name]
        expected.append((pin, f"{pyproject.name} {group}"))
    if not expected and name in IMAGE_ONLY_PINS:
        expected.append((IMAGE_ONLY_PINS[name], "medfactory.docker_pins.IMAGE_ONLY_PINS"))
    if not expected:
        message = (
            f"{where}: {name}=={version} is pinned by neither {constraints.name} nor {pyproject.name} "
            f"(nor IMAGE_ONLY_PINS): add the pin to the project first"
        )
        return [message]
    return [
        f"{where}: {name}=={version} but the project pins {name}=={pin} ({source})"
        for pin, source in expected
        if pin != version
    ]


def check_compose_pins(compose: Path, dockerfile: Path, pyproject: Path) -> list[str]:
    """The compose file builds `dockerfile` and tags the image with the project's version."""
    document = yaml.safe_load(compose.read_text(encoding="utf-8")) or {}
    version = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    findings: list[str] = []
    services = document.get("services") or {}
    if "train" not in services:
        return [f"{compose.name}: no `train` service"]
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        context = compose.parent / (build.get("context", ".") if isinstance(build, dict) else build)
        built = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
        if built.resolve() != dockerfile.resolve():
            findings.append(f"{compose.name}: service {name} builds {built}, not {dockerfile}")
        image = service.get("image", "")
        tag = image.rpartition(":")[2] if ":" in image else ""
        if tag != version:
            findings.append(
                f"{compose.name}: service {name} tags its image {image!r}, but {pyproject.name} is version {version}"
            )
    return findings
