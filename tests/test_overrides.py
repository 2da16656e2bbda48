"""`key=value` overrides are typed as llamafactory-cli types them, and written back so it reads the same values."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from medfactory.base.overrides import OverrideError, parse_overrides, to_cli_arguments


def test_values_are_typed_like_llamafactory_reads_its_command_line() -> None:
    parsed = parse_overrides(["bf16=false", "cutoff_len=512", "learning_rate=2e-5", "template=mistral", "adapter_name_or_path=null"])
    assert parsed == {"bf16": False, "cutoff_len": 512, "learning_rate": 2e-5, "template": "mistral", "adapter_name_or_path": None}
    assert isinstance(parsed["learning_rate"], float)
    # what LLaMA-Factory itself does with the same arguments (hparams/parser.py: OmegaConf.from_cli)
    assert OmegaConf.to_container(OmegaConf.from_cli(["bf16=false", "cutoff_len=512", "learning_rate=2e-5"])) == {
        "bf16": False, "cutoff_len": 512, "learning_rate": 2e-5,
    }  # fmt: skip


@pytest.mark.parametrize(
    "values",
    [
        {"bf16": False, "do_sample": True, "temperature": 0.1, "max_steps": 10, "adapter_name_or_path": None},
        {"output_dir": "saves/run 1", "template": "true", "dataset": "a,b", "seed": "7", "note": "it's: fine"},
    ],
)
def test_cli_arguments_read_back_to_the_same_values(values: dict) -> None:
    arguments = to_cli_arguments(values)
    assert OmegaConf.to_container(OmegaConf.from_cli(arguments)) == values


@pytest.mark.parametrize("bad", ["bf16", "=false", " =1"])
def test_a_pair_without_key_or_equals_sign_names_the_option_and_the_form(bad: str) -> None:
    with pytest.raises(OverrideError, match=r"--set .*key=value, e.g. flash_attn=fa2"):
        parse_overrides([bad], option="--set", example="flash_attn=fa2")


def test_omegaconf_grammar_errors_become_override_errors() -> None:
    with pytest.raises(OverrideError, match="--override"):
        parse_overrides(["x=${missing}"])
