"""TIES / DARE merges (medfactory.run.merge): per-tensor values computed by hand, full merges of tiny
Mistrals checked tensor by tensor, DARE's determinism and expectation, recipe validation, the command."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.run.merge import (
    MANIFEST_NAME,
    MergeError,
    MergeRecipeError,
    dare_keep_mask,
    dare_merge,
    load_merge_recipe,
    merge_tensor,
    relative_distance,
    run_merge,
    tensor_generator,
    ties_merge,
    trim_to_density,
)
from medfactory.run.tiny_model import build_tiny_model

HEADER = "# recipe: {name}\n# version: 1.0.0\n# source: tests/test_merge.py\n"
GRID = 2.0**-20  # base weights and perturbations on this grid: every sum and difference is exact in float32

# --------------------------------------------------------------------------------------------------
# Per-tensor functions against values worked out by hand
# --------------------------------------------------------------------------------------------------

TAU_1 = [[0.5, -0.1, 0.3], [-0.7, 0.2, 0.05]]
TAU_2 = [[-0.4, 0.6, -0.2], [0.1, -0.9, 0.8]]
TAU_3 = [[0.2, -0.3, 0.9], [-0.6, 0.4, -0.1]]


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_trim_keeps_the_top_density_magnitudes() -> None:
    # density 0.5 of 6 entries: k = 3 largest |values| of each task vector survive.
    assert torch.equal(trim_to_density(_t(TAU_1), 0.5), _t([[0.5, 0.0, 0.3], [-0.7, 0.0, 0.0]]))  # .7 .5 .3
    assert torch.equal(trim_to_density(_t(TAU_2), 0.5), _t([[0.0, 0.6, 0.0], [0.0, -0.9, 0.8]]))  # .9 .8 .6
    assert torch.equal(trim_to_density(_t(TAU_3), 0.5), _t([[0.0, 0.0, 0.9], [-0.6, 0.4, 0.0]]))  # .9 .6 .4
    assert torch.equal(trim_to_density(_t(TAU_1), 1.0), _t(TAU_1))
    assert torch.count_nonzero(trim_to_density(_t(TAU_1), 0.01)) == 1  # k = max(1, int(0.06)) = 1
    # equal magnitudes at the cut (common in bfloat16): exactly k kept, lowest index first
    tied = _t([3.0, -3.0, 1.0, 3.0, 0.0, -2.0])
    assert torch.equal(trim_to_density(tied, 0.5), _t([3.0, -3.0, 0.0, 3.0, 0.0, 0.0]))  # k = 3
    assert torch.equal(trim_to_density(tied, 0.34), _t([3.0, -3.0, 0.0, 0.0, 0.0, 0.0]))  # k = int(2.04) = 2


def test_ties_equals_trim_elect_disjoint_mean_by_hand() -> None:
    # Trimmed (above):          tau1 [[ .5, 0, .3], [-.7, 0, 0]]
    #                           tau2 [[ 0, .6, 0 ], [ 0, -.9, .8]]
    #                           tau3 [[ 0, 0, .9 ], [-.6, .4, 0]]
    # Elected sign of the sum:       [[ +,  +,  + ], [ -,   -,  + ]]   (.5, .6, 1.2, -1.3, -.5, .8)
    # Agreeing entries:              (0,0) tau1 .5 | (0,1) tau2 .6 | (0,2) tau1 .3, tau3 .9
    #                                (1,0) tau1 -.7, tau3 -.6 | (1,1) tau2 -.9 (tau3's +.4 disagrees) | (1,2) tau2 .8
    # Disjoint mean (equal weights, normalize): [[.5, .6, .6], [-.65, -.9, .8]]
    deltas = [_t(TAU_1), _t(TAU_2), _t(TAU_3)]
    merged = ties_merge(deltas, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], normalize=True)
    torch.testing.assert_close(merged, _t([[0.5, 0.6, 0.6], [-0.65, -0.9, 0.8]]), rtol=0, atol=1e-7)
    # normalize: false -> the weighted sum of the agreeing entries: 0.5 x (.5, .6, .3+.9, -.7-.6, -.9, .8)
    merged = ties_merge(deltas, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], normalize=False)
    torch.testing.assert_close(merged, _t([[0.25, 0.3, 0.6], [-0.65, -0.45, 0.4]]), rtol=0, atol=1e-7)
    # base + merged task vector, through the per-tensor entry point (task vectors taken from models)
    base = _t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    result = merge_tensor("ties", "w", base, [base + d for d in deltas], [0.5] * 3, [0.5] * 3, normalize=True)
    torch.testing.assert_close(result, base + _t([[0.5, 0.6, 0.6], [-0.65, -0.9, 0.8]]), rtol=0, atol=1e-6)


def test_ties_sign_election_uses_the_weighted_sum() -> None:
    # weights 0.2 and 1.0, no trimming: weighted a = [.2, -.2], b = [-.6, .8]; sums [-.4, .6] elect [-, +]:
    # only b agrees at both entries -> normalized: b's values; an unweighted election would pick a's.
    merged = ties_merge([_t([1.0, -1.0]), _t([-0.6, 0.8])], [0.2, 1.0], [1.0, 1.0], normalize=True)
    torch.testing.assert_close(merged, _t([-0.6, 0.8]), rtol=0, atol=1e-7)
    # weights (1, 3), agreeing at entry 0: weighted disjoint mean (1*.4 + 3*.2) / (1 + 3) = .25
    merged = ties_merge([_t([0.4]), _t([0.2])], [1.0, 3.0], [1.0, 1.0], normalize=True)
    torch.testing.assert_close(merged, _t([0.25]), rtol=0, atol=1e-7)


def test_dare_with_given_masks_by_hand() -> None:
    keep_1 = torch.tensor([[True, False, True], [False, True, True]])
    keep_2 = torch.tensor([[True, True, False], [True, False, True]])
    # density 0.5: survivors x 2.  dropped tau1 = [[1, 0, .6], [0, .4, .1]]; dropped tau2 = [[-.8, 1.2, 0], [.2, 0, 1.6]]
    deltas = [_t(TAU_1), _t(TAU_2)]
    linear = dare_merge(deltas, [0.5, 0.5], [0.5, 0.5], [keep_1, keep_2], elect_sign=False, normalize=False)
    torch.testing.assert_close(linear, _t([[0.1, 0.6, 0.3], [0.1, 0.2, 0.85]]), rtol=0, atol=1e-7)
    # dare_ties: signs of the sums [[+(.2), +, +], [+, +, +]]; -.8 at (0,0) disagrees -> 0.5 x 1 = .5 there
    ties = dare_merge(deltas, [0.5, 0.5], [0.5, 0.5], [keep_1, keep_2], elect_sign=True, normalize=False)
    torch.testing.assert_close(ties, _t([[0.5, 0.6, 0.3], [0.1, 0.2, 0.85]]), rtol=0, atol=1e-7)


def test_dare_is_deterministic_for_a_seed_and_unbiased() -> None:
    shape = (400, 500)
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(shape, generator=gen)
    tau_1, tau_2 = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    models = [base + tau_1, base + tau_2]
    expected = 0.5 * tau_1 + 0.5 * tau_2  # E[dare_linear] = sum_i w_i tau_i

    first = merge_tensor("dare_linear", "layer.weight", base, models, [0.5, 0.5], [0.5, 0.5], normalize=False, seed=42)
    again = merge_tensor("dare_linear", "layer.weight", base, models, [0.5, 0.5], [0.5, 0.5], normalize=False, seed=42)
    other = merge_tensor("dare_linear", "layer.weight", base, models, [0.5, 0.5], [0.5, 0.5], normalize=False, seed=43)
    renamed = merge_tensor("dare_linear", "other.weight", base, models, [0.5, 0.5], [0.5, 0.5], normalize=False, seed=42)
    assert torch.equal(first, again)
    assert not torch.equal(first, other) and not torch.equal(first, renamed)

    delta = (first - base).double()
    n = delta.numel()
    # per entry: w1 tau1 (2 m1) + w2 tau2 (2 m2), m ~ Bernoulli(.5) -> variance (tau1^2 + tau2^2) / 4 around the mean
    assert abs((delta - expected.double()).mean().item()) < 5 * math.sqrt(0.5 / n)
    slope = (delta * expected.double()).sum() / (expected.double() ** 2).sum()
    assert abs(slope.item() - 1.0) < 0.02
    # constant task vectors 1 and 2: the mean merged value is .5 x 1 + .5 x 2 = 1.5
    constant = merge_tensor(
        "dare_linear", "c", torch.zeros(shape), [torch.ones(shape), torch.full(shape, 2.0)], [0.5, 0.5], [0.5, 0.5], False, seed=7
    )
    assert abs(constant.mean().item() - 1.5) < 0.02
    assert set(constant.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}  # m1 + 2 m2
    # keep fraction ~ density; survivors exactly tau / density
    mask = dare_keep_mask(shape, 0.3, tensor_generator(1, 0, "x"))
    assert abs(mask.float().mean().item() - 0.3) < 0.01
    one = merge_tensor("dare_ties", "x", torch.zeros(shape), [tau_1], [1.0], [0.3], normalize=False, seed=1)
    torch.testing.assert_close(one[mask], tau_1[mask] / 0.3)
    assert torch.count_nonzero(one[~mask]) == 0


# --------------------------------------------------------------------------------------------------
# Full merges of tiny Mistrals
# --------------------------------------------------------------------------------------------------


def _copy_non_weights(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and not item.name.endswith(".safetensors"):
            shutil.copy2(item, target / item.name)


def _perturbation(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Distinct magnitudes (a permutation of 1..n steps of GRID) with random signs: the trim is unambiguous."""
    gen = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    magnitudes = (torch.randperm(n, generator=gen) + 1).to(torch.float64) * GRID
    signs = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    return (magnitudes * signs).reshape(shape).to(torch.float32)


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny base (weights rounded to GRID) and two fine-tunes: base + known perturbations."""
    root = tmp_path_factory.mktemp("merge-family")
    tiny = build_tiny_model("mistral", list(generate_notes(60, seed=5)))
    weights = load_file(str(tiny / "model.safetensors"))
    base = {name: (torch.round(t.double() / GRID) * GRID).float() for name, t in weights.items()}
    folders, perturbations = {}, {}
    for label, tensors in [("base", base)]:
        _copy_non_weights(tiny, root / label)
        save_file(tensors, str(root / label / "model.safetensors"), metadata={"format": "pt"})
        folders[label] = root / label
    for label, seed in [("ft1", 1), ("ft2", 2)]:
        perturbations[label] = {
            name: _perturbation(tuple(t.shape), seed * 1000 + i) for i, (name, t) in enumerate(sorted(base.items()))
        }
        fine_tuned = {name: base[name] + perturbations[label][name] for name in base}
        _copy_non_weights(tiny, root / label)
        save_file(fine_tuned, str(root / label / "model.safetensors"), metadata={"format": "pt"})
        folders[label] = root / label
    return {"root": root, "folders": folders, "base": base, "perturbations": perturbations}


def _recipe(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(HEADER.format(name=name) + body, encoding="utf-8")
    return path


def _hand_ties(base: np.ndarray, taus: list[np.ndarray], weights: list[float], density: float, normalize: bool) -> np.ndarray:
    """TIES written out in numpy: trim by a magnitude threshold, elect, disjoint (weighted) mean."""
    trimmed = []
    for tau in taus:
        k = max(1, int(density * tau.size))
        threshold = np.sort(np.abs(tau).ravel())[::-1][k - 1]
        trimmed.append(np.where(np.abs(tau) >= threshold, tau, 0.0))
    weighted = [w * t for w, t in zip(weights, trimmed)]
    elected = np.where(np.sum(weighted, axis=0) >= 0, 1.0, -1.0)
    agree = [np.sign(x) == elected for x in weighted]
    numerator = np.sum([np.where(a, x, 0.0) for a, x in zip(agree, weighted)], axis=0)
    if not normalize:
        return base + numerator
    denominator = np.sum([a * w for a, w in zip(agree, weights)], axis=0)
    return base + numerator / np.where(denominator == 0, 1.0, denominator)


def test_full_ties_merge_equals_hand_computed_ties_and_generates(family: dict, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folders = family["folders"]
    output = tmp_path / "merged"
    recipe = _recipe(
        tmp_path,
        "tiny_ties",
        f"method: ties\nbase_model: {folders['base']}\nmodels:\n"
        f"  - model: {folders['ft1']}\n    weight: 0.5\n    density: 0.5\n"
        f"  - model: {folders['ft2']}\n    weight: 0.5\n    density: 0.5\n"
        f"dtype: float32\noutput: {output}\nmax_shard_size: 300KB\n",
    )
    assert run_merge(recipe) == output.resolve()

    index = json.loads((output / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1  # 300 KB shards: the index and the streaming writer are exercised
    merged: dict[str, torch.Tensor] = {}
    for shard in shards:
        merged.update(load_file(str(output / shard)))
    assert set(merged) == set(family["base"])
    assert all(not torch.equal(merged[name], base) for name, base in family["base"].items())
    for name, base in family["base"].items():
        taus = [family["perturbations"][label][name].double().numpy() for label in ("ft1", "ft2")]
        expected = _hand_ties(base.double().numpy(), taus, [0.5, 0.5], 0.5, normalize=True)
        np.testing.assert_allclose(merged[name].double().numpy(), expected, rtol=0, atol=1e-6, err_msg=name)

    manifest = json.loads((output / MANIFEST_NAME).read_text())
    assert manifest["recipe"]["sha256"] == hashlib.sha256(recipe.read_bytes()).hexdigest()
    assert manifest["recipe"]["version"] == "1.0.0" and manifest["recipe"]["path"] == str(recipe)
    assert manifest["method"] == "ties" and manifest["values"]["normalize"] is True
    assert [m["weight"] for m in manifest["models"]] == [0.5, 0.5] and [m["kind"] for m in manifest["models"]] == ["full", "full"]
    for shard in shards:
        assert manifest["outputs"][shard]["sha256"] == hashlib.sha256((output / shard).read_bytes()).hexdigest()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]  # no staging left behind

    model = AutoModelForCausalLM.from_pretrained(output)
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert next(model.parameters()).dtype == torch.float32
    inputs = tokenizer("Paciente com dispneia", return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 5


def test_bfloat16_dare_merge_is_reproducible_and_loads(family: dict, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    folders = family["folders"]
    body = (
        f"method: dare_ties\nbase_model: {folders['base']}\nmodels:\n"
        f"  - model: {folders['ft1']}\n    weight: 0.5\n    density: 0.5\n"
        f"  - model: {folders['ft2']}\n    weight: 0.5\n    density: 0.5\n"
        f"dtype: bfloat16\nseed: 42\noutput: {tmp_path / 'a'}\n"
    )
    recipe = _recipe(tmp_path, "tiny_dare", body)
    first = run_merge(recipe)
    second = run_merge(recipe, {"output": tmp_path / "b"})
    third = run_merge(recipe, {"output": tmp_path / "c", "seed": 43})

    def digest(folder: Path) -> str:
        return json.loads((folder / MANIFEST_NAME).read_text())["outputs"]["model.safetensors"]["sha256"]

    assert digest(first) == digest(second) != digest(third)
    manifest = json.loads((second / MANIFEST_NAME).read_text())
    assert manifest["values"] == {**manifest["values"], "seed": 42, "normalize": False, "dtype": "bfloat16"}
    assert manifest["overrides"] == {"output": str(tmp_path / "b")}
    assert json.loads((first / "config.json").read_text())["dtype"] == "bfloat16"
    tensors = load_file(str(first / "model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    model = AutoModelForCausalLM.from_pretrained(first)
    assert model.generate(torch.tensor([[1, 5, 9]]), max_new_tokens=3, do_sample=False).shape == (1, 6)


def test_lora_adapter_is_merged_into_the_base_first(family: dict, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = family["folders"]["base"]
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")
    factors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))

    output = tmp_path / "merged"
    recipe = _recipe(
        tmp_path,
        "tiny_adapter",
        f"method: ties\nbase_model: {base_dir}\nmodels:\n  - model: {tmp_path / 'adapter'}\n    weight: 0.5\n    density: 0.5\n"
        f"dtype: float32\noutput: {output}\n",
    )
    run_merge(recipe)
    merged = load_file(str(output / "model.safetensors"))
    scale = 8 / 4
    lora_targets = 0
    for name, base in family["base"].items():
        a_key = "base_model.model." + name.replace(".weight", ".lora_A.weight")
        if a_key in factors:  # task vector = (alpha / r) B A, written out from the adapter's own factors
            tau = scale * (factors[a_key.replace("lora_A", "lora_B")].double() @ factors[a_key].double())
            assert torch.count_nonzero(tau) == tau.numel()  # init_lora_weights=False: a real update
            expected = _hand_ties(base.double().numpy(), [tau.numpy()], [0.5], 0.5, normalize=True)
            np.testing.assert_allclose(merged[name].double().numpy(), expected, rtol=0, atol=1e-5, err_msg=name)
            assert torch.count_nonzero(merged[name] - base) == tau.numel() // 2  # density 0.5 of the update kept
            lora_targets += 1
        else:
            assert torch.equal(merged[name], base), name  # no task vector outside the LoRA modules
    assert lora_targets == 4  # q_proj and v_proj of 2 layers
    record = json.loads((output / MANIFEST_NAME).read_text())["models"][0]
    assert record["kind"] == "lora_adapter" and record["adapter_merge_dtype"] == "float32"
    assert not [p for p in tmp_path.iterdir() if ".adapters." in p.name]  # scratch merge removed


def test_failed_merge_leaves_the_previous_output_and_no_staging(family: dict, tmp_path: Path) -> None:
    folders = family["folders"]
    broken = tmp_path / "broken"
    _copy_non_weights(folders["ft1"], broken)
    tensors = load_file(str(folders["ft1"] / "model.safetensors"))
    tensors.pop("model.norm.weight")
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    output = tmp_path / "merged"
    output.mkdir()
    (output / "previous.txt").write_text("keep me")
    recipe = _recipe(
        tmp_path,
        "tiny_broken",
        f"method: ties\nbase_model: {folders['base']}\nmodels:\n  - model: {broken}\n    weight: 0.5\n    density: 0.5\n"
        f"dtype: float32\noutput: {output}\n",
    )
    with pytest.raises(MergeError, match=r"models\[0\].*missing 1: model\.norm\.weight"):
        run_merge(recipe)
    assert (output / "previous.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "merged", "tiny_broken.yaml"]


def test_merge_command_overrides_base_models_and_output(family: dict, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from medfactory.cli.run import merge_command

    app = typer.Typer()
    app.command()(merge_command)
    folders = family["folders"]
    recipe = _recipe(
        tmp_path,
        "tiny_cli",
        "method: ties\nbase_model: nowhere/base\nmodels:\n  - model: nowhere/one\n    weight: 0.5\n    density: 0.5\n"
        "  - model: nowhere/two\n    weight: 0.5\n    density: 0.5\ndtype: float32\noutput: nowhere/out\n",
    )
    output = tmp_path / "out"
    args = [str(recipe), "--base-model", str(folders["base"]), "--model", str(folders["ft1"]), "--model", str(folders["ft2"])]
    result = CliRunner().invoke(app, [*args, "--output", str(output)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((output / MANIFEST_NAME).read_text())
    assert [m["path"] for m in manifest["models"]] == [str(folders["ft1"]), str(folders["ft2"])]
    assert manifest["base_model"]["path"] == str(folders["base"])

    result = CliRunner().invoke(app, [*args[:-2], "--output", str(tmp_path / "x")])  # one --model for two models
    assert result.exit_code == 1
    assert "tiny_cli.yaml" in result.output and "`models`" in result.output and "exactly 2" in result.output
    result = CliRunner().invoke(app, [str(recipe), "--output", str(tmp_path / "y")])  # hub ids, offline, not cached
    assert result.exit_code == 1 and "`base_model`" in result.output and "nowhere/base" in result.output


# --------------------------------------------------------------------------------------------------
# Recipe validation
# --------------------------------------------------------------------------------------------------

VALID = "method: ties\nbase_model: org/base\nmodels:\n  - model: org/ft\n    weight: 0.5\n    density: 0.5\ndtype: bfloat16\noutput: saves/x\n"


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        (VALID + "denisty: 0.5\n", "`denisty`", "not a merge recipe key"),
        (
            VALID.replace("    density: 0.5\n", "    density: 0.5\n    densty: 1\n"),
            "`models[0].densty`",
            "did you mean `density`",
        ),
        (VALID.replace("    weight: 0.5\n", ""), "`models[0].weight`", "missing"),
        (VALID.replace("density: 0.5", "density: 1.5"), "`models[0].density`", "outside (0, 1]"),
        (VALID.replace("density: 0.5", "density: 0"), "`models[0].density`", "outside (0, 1]"),
        (VALID.replace("density: 0.5", "density: half"), "`models[0].density`", "outside (0, 1]"),
        (VALID.replace("density: 0.5", "density:"), "`models[0].density`", "missing"),
        (VALID.replace("method: ties", "method: slerp"), "`method`", "ties, dare_ties, dare_linear"),
        (VALID.replace("output: saves/x\n", ""), "`output`", "missing"),
        (VALID.replace("dtype: bfloat16", "dtype: fp8"), "`dtype`", "bfloat16"),
        (VALID.replace("method: ties", "method: dare_ties"), "`seed`", "missing"),
        (VALID + "normalize: maybe\n", "`normalize`", "true or false"),
        (
            VALID.replace("models:\n  - model: org/ft\n    weight: 0.5\n    density: 0.5\n", "models: []\n"),
            "`models`",
            "non-empty",
        ),
    ],
)
def test_recipe_errors_name_the_file_and_the_key(tmp_path: Path, body: str, key: str, words: str) -> None:
    recipe = _recipe(tmp_path, "bad", body)
    with pytest.raises(MergeRecipeError) as error:
        load_merge_recipe(recipe)
    message = str(error.value)
    assert str(recipe) in message and key in message and words in message and "Fix:" in message


def test_recipe_header_and_overrides(tmp_path: Path) -> None:
    no_version = tmp_path / "nover.yaml"
    no_version.write_text("# recipe: nover\n# source: x\n" + VALID, encoding="utf-8")
    with pytest.raises(MergeRecipeError, match=r"nover\.yaml: `# version:`"):
        load_merge_recipe(no_version)
    recipe = _recipe(tmp_path, "ok", VALID)
    loaded = load_merge_recipe(recipe, {"models": ["other/ft"], "base_model": "other/base", "output": Path("out")})
    assert loaded.models[0].model == "other/ft" and loaded.models[0].weight == 0.5
    assert loaded.base_model == "other/base" and loaded.output == Path("out") and loaded.normalize is True
    with pytest.raises(MergeRecipeError, match=r"`models`: 2 model path\(s\) given"):
        load_merge_recipe(recipe, {"models": ["a", "b"]})
    with pytest.raises(MergeRecipeError, match=r"`densty`: is not a merge recipe key \(override\)"):
        load_merge_recipe(recipe, {"densty": 1})


def test_repository_merge_recipes_validate(repo_root: Path) -> None:
    recipes = sorted((repo_root / "recipes" / "merge").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"spanish_medical_ties", "spanish_medical_dare"}
    for path in recipes:
        recipe = load_merge_recipe(path)
        assert recipe.dtype == "bfloat16" and recipe.version == "1.1.0"
        assert all(m.weight == 0.5 and m.density == 0.5 for m in recipe.models)  # BioMistral's values
        # BioMistral's pattern: the domain model (here the Spanish medical model, a LoRA on BioMistral-7B) merged with the
        # instruct model BioMistral-7B was pre-trained from, which is also the TIES / DARE base; never a model into its own base
        assert recipe.base_model == "mistralai/Mistral-7B-Instruct-v0.1"
        assert [m.model for m in recipe.models] == ["saves/spanish_medical_dpo"] and recipe.models[0].adapter_base is None
    assert load_merge_recipe(repo_root / "recipes/merge/spanish_medical_ties.yaml").method == "ties"
    assert load_merge_recipe(repo_root / "recipes/merge/spanish_medical_dare.yaml").method == "dare_ties"


# --------------------------------------------------------------------------------------------------
# Models of another base or shape are refused
# --------------------------------------------------------------------------------------------------


def _model_from_config(source: Path, target: Path, seed: int = 0, **changes) -> Path:
    """A random-weight model with ``source``'s config and tokenizer, ``changes`` applied to the config."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    for key, value in changes.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    _copy_non_weights(source, target)
    AutoModelForCausalLM.from_config(config).save_pretrained(target)
    return target


def _one_model_recipe(directory: Path, name: str, base: Path, model: Path, model_extra: str = "") -> Path:
    body = f"method: ties\nbase_model: {base}\nmodels:\n  - model: {model}\n    weight: 0.5\n    density: 0.5\n{model_extra}"
    return _recipe(directory, name, body + f"dtype: float32\noutput: {directory / (name + '-out')}\n")


@pytest.mark.parametrize(
    ("change", "field", "values"),
    [
        ({"hidden_size": 64, "head_dim": 8}, "hidden_size", "64 vs 128"),
        ({"num_hidden_layers": 3}, "num_hidden_layers", "3 vs 2"),
        ({"num_key_value_heads": 2}, "num_key_value_heads", "2 vs 4"),
        ({"rope_theta": 10000.0}, "rope_theta", "10000.0 vs 1000000.0"),
    ],
)
def test_a_model_of_another_shape_is_refused_naming_both_models_and_the_field(family: dict, tmp_path: Path, change, field, values) -> None:
    base = family["folders"]["base"]
    other = _model_from_config(base, tmp_path / "other", **change)
    recipe = _one_model_recipe(tmp_path, "shapes", base, other)
    with pytest.raises(MergeError) as error:
        run_merge(recipe)
    message = str(error.value)
    assert str(recipe) in message and f"`models[0]` ({other})" in message and f"`base_model` ({base})" in message
    assert f"differ in {field}: {values}" in message and "Fix:" in message
    assert not (tmp_path / "shapes-out").exists()


def test_another_vocabulary_or_architecture_is_refused(family: dict, tmp_path: Path) -> None:
    base = family["folders"]["base"]
    small_vocabulary = build_tiny_model("mistral", list(generate_notes(60, seed=5)), vocab_size=600)
    with pytest.raises(MergeError, match=r"differ in vocab_size: \d+ vs \d+"):
        run_merge(_one_model_recipe(tmp_path, "vocab", base, small_vocabulary))
    llama = build_tiny_model("llama", list(generate_notes(60, seed=5)))
    with pytest.raises(MergeError, match=r"differ in architectures: \['LlamaForCausalLM'\] vs \['MistralForCausalLM'\]"):
        run_merge(_one_model_recipe(tmp_path, "arch", base, llama))


def test_an_adapter_on_another_shape_is_refused_before_it_is_merged(family: dict, tmp_path: Path, monkeypatch) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import medfactory.run.merge as merge

    narrow = _model_from_config(family["folders"]["base"], tmp_path / "narrow", hidden_size=64, head_dim=8)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(narrow), config).save_pretrained(tmp_path / "adapter")

    def never(*args, **kwargs):
        raise AssertionError("the adapter must not be merged before the architectures are checked")

    monkeypatch.setattr(merge, "merge_adapter_into_base", never)
    recipe = _one_model_recipe(tmp_path, "adapter_shapes", family["folders"]["base"], tmp_path / "adapter")
    with pytest.raises(MergeError, match=rf"a LoRA adapter on {narrow}\) and `base_model` .* differ in hidden_size: 64 vs 128"):
        run_merge(recipe)


def test_a_model_of_another_base_with_the_same_shapes_is_refused(family: dict, tmp_path: Path) -> None:
    base = family["folders"]["base"]
    stranger = _model_from_config(base, tmp_path / "stranger", seed=123)  # same config, its own random weights
    recipe = _one_model_recipe(tmp_path, "lineage", base, stranger)
    with pytest.raises(MergeError) as error:
        run_merge(recipe)
    message = str(error.value)
    assert "is not a fine-tune of `base_model`" in message and str(base) in message and str(stranger) in message
    assert re.search(r"differs from the base's by 1\.\d\d of its norm", message)
    assert not (tmp_path / "lineage-out").exists()
    assert relative_distance(family["base"]["model.norm.weight"] + 0.01, family["base"]["model.norm.weight"]) < 0.02


def test_an_adapter_is_applied_to_the_model_it_was_trained_on(family: dict, tmp_path: Path) -> None:
    """BioMistral's pattern: the LoRA of a domain model (ft1 + adapter) merged against the instruct model it derives from (base)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = family["folders"]
    torch.manual_seed(4)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(folders["ft1"]), config).save_pretrained(tmp_path / "adapter")
    factors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(folders["ft1"])
    output = run_merge(_one_model_recipe(tmp_path, "on_ft1", folders["base"], tmp_path / "adapter"))
    merged = load_file(str(output / "model.safetensors"))
    for name, base in family["base"].items():
        tau = family["perturbations"]["ft1"][name].double()  # ft1 - base
        a_key = "base_model.model." + name.replace(".weight", ".lora_A.weight")
        if a_key in factors:
            tau = (base.double() + tau + 2.0 * factors[a_key.replace("lora_A", "lora_B")].double() @ factors[a_key].double()).float().double() - base.double()
        expected = _hand_ties(base.double().numpy(), [tau.numpy()], [0.5], 0.5, normalize=True)
        np.testing.assert_allclose(merged[name].double().numpy(), expected, rtol=0, atol=2e-5, err_msg=name)
    record = json.loads((output / MANIFEST_NAME).read_text())["models"][0]
    assert record["merged_into"] == str(folders["ft1"]) and record["merged_into_from"] == "adapter_config.json base_model_name_or_path"
    # `adapter_base:` in the recipe overrides what the adapter declares
    recipe = _one_model_recipe(tmp_path, "override", folders["base"], tmp_path / "adapter", model_extra=f"    adapter_base: {folders['ft2']}\n")
    run_merge(recipe)
    record = json.loads((tmp_path / "override-out" / MANIFEST_NAME).read_text())["models"][0]
    assert record["merged_into"] == str(folders["ft2"]) and record["merged_into_from"] == "recipe"


# --------------------------------------------------------------------------------------------------
# Damaged weight files: a named error, never a traceback
# --------------------------------------------------------------------------------------------------


def _copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.5, 0.999], ids=["empty", "in-header", "half", "last-byte"])
@pytest.mark.parametrize("which", ["models[0]", "base_model"])
def test_a_truncated_safetensors_is_named_with_what_to_do(family: dict, tmp_path: Path, keep: float, which: str) -> None:
    import typer
    from typer.testing import CliRunner

    from medfactory.cli.run import merge_command

    base = _copy_model(family["folders"]["base"], tmp_path / "base") if which == "base_model" else family["folders"]["base"]
    model = _copy_model(family["folders"]["ft1"], tmp_path / "ft1") if which == "models[0]" else family["folders"]["ft1"]
    damaged = (base if which == "base_model" else model) / "model.safetensors"
    _truncate(damaged, keep)
    recipe = _one_model_recipe(tmp_path, "truncated", base, model)
    with pytest.raises(MergeError) as error:
        run_merge(recipe)
    message = str(error.value)
    assert message.startswith(f"{damaged}: not a readable safetensors file") and "download the model again" in message
    assert not (tmp_path / "truncated-out").exists()
    app = typer.Typer()
    app.command()(merge_command)
    result = CliRunner().invoke(app, [str(recipe)])
    assert result.exit_code == 1 and f"error: {damaged}: not a readable safetensors file" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_a_damaged_shard_index_or_a_missing_shard_is_named(family: dict, tmp_path: Path) -> None:
    model = _copy_model(family["folders"]["ft1"], tmp_path / "sharded")
    tensors = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2], "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    for file, part in halves.items():
        save_file({name: tensors[name] for name in part}, str(model / file), metadata={"format": "pt"})
    index = model / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {name: file for file, part in halves.items() for name in part}}))
    recipe = _one_model_recipe(tmp_path, "sharded", family["folders"]["base"], model)
    assert (run_merge(recipe) / "model.safetensors").is_file()  # the sharded copy itself merges
    (model / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(MergeError, match=r"model.safetensors.index.json lists model-00002-of-00002.safetensors, not in .*download the model again"):
        run_merge(recipe)
    index.write_text('{"weight_map": ')
    with pytest.raises(MergeError, match=r"model.safetensors.index.json: not a readable shard index"):
        run_merge(recipe)


def test_a_truncated_adapter_is_named_before_anything_is_merged(family: dict, tmp_path: Path, monkeypatch) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import medfactory.run.merge as merge

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(family["folders"]["ft1"]), config).save_pretrained(tmp_path / "adapter")
    damaged = tmp_path / "adapter" / "adapter_model.safetensors"
    _truncate(damaged, 0.5)

    def never(*args, **kwargs):
        raise AssertionError("a truncated adapter must be refused before it is merged")

    monkeypatch.setattr(merge, "merge_adapter_into_base", never)
    with pytest.raises(MergeError, match=rf"^{re.escape(str(damaged))}: not a readable safetensors file"):
        run_merge(_one_model_recipe(tmp_path, "adapter_cut", family["folders"]["base"], tmp_path / "adapter"))
