"""`medfactory merge`: BioMistral-style TIES and DARE merges on whole task vectors, streamed tensor by tensor.

Task vectors are taken in float32 against the base and the defaults are mergekit's (BioMistral's merges were
made with it). What exactly is computed, and why this module rather than PEFT or mergekit: docs/merge.md.
Recipes: recipes/merge/*.yaml; ``merge_manifest.json`` beside the output records the recipe, inputs and values.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from medfactory.base.versions import package_versions

logger = logging.getLogger(__name__)

METHODS = ("ties", "dare_ties", "dare_linear")
# mergekit's defaults (merge_methods/registry.py): TIES normalizes, the DARE variants do not.
DEFAULT_NORMALIZE = {"ties": True, "dare_ties": False, "dare_linear": False}
DTYPES = ("bfloat16", "float16", "float32")
TOP_LEVEL_KEYS = {
    "method": "ties | dare_ties | dare_linear",
    "base_model": "the model every task vector is taken against (hub id or local folder)",
    "models": "list of {model, weight, density}",
    "dtype": "output dtype: bfloat16 | float16 | float32",
    "output": "output folder",
    "seed": "seed of the DARE drop masks (required for dare_*)",
    "normalize": "divide by the sum of the (agreeing) weights; default: true for ties, false for dare_*",
    "adapter_merge_dtype": "dtype LoRA adapters are merged into the base in: float32 (default) | bfloat16 | float16",
    "max_shard_size": "largest output shard, e.g. 5GB (default) or 500MB",
}
REQUIRED_TOP_LEVEL = ("method", "base_model", "models", "dtype", "output")
MODEL_KEYS = {
    "model": "a fine-tuned model (hub id, local folder, or LoRA adapter folder)",
    "weight": "its weight",
    "density": "fraction of its task vector kept, in (0, 1]",
    "adapter_base": "for a LoRA adapter: the model it was trained on (default: its adapter_config.json's base_model_name_or_path)",
}
REQUIRED_MODEL_KEYS = ("model", "weight", "density")
# config.json fields two checkpoints must share for a task vector to mean anything: the architecture and
# every shape, plus the position encoding (Mistral-7B v0.1 and v0.2 have one shape but rope_theta 1e4 / 1e6).
ARCHITECTURE_FIELDS = (
    "architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "rope_theta", "sliding_window",
)  # fmt: skip
# A fine-tune moves a weight matrix by a small fraction of its norm; two independent initialisations (or
# pre-trainings) of one architecture differ by ~sqrt(2) of it. Above this, the model is not from the base.
MAX_RELATIVE_DISTANCE = 1.0
DEFAULT_MAX_SHARD_SIZE = "5GB"
MANIFEST_NAME = "merge_manifest.json"
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
# Files of a model folder that are weights (never copied from the base) or its model card.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".index.json")
_NOT_COPIED = {"README.md", ".gitattributes", MANIFEST_NAME, "adapter_config.json"}


class MergeRecipeError(ValueError):
    """A merge recipe that cannot run: the message names the file, the key and the fix."""


class MergeError(RuntimeError):
    """Inputs that cannot be merged (missing tensors, different shapes, no safetensors weights)."""


# --------------------------------------------------------------------------------------------------
# Recipe schema
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeModel:
    """One model merged into the base: its path (or hub id), weight and density."""

    model: str
    weight: float
    density: float
    adapter_base: str | None = None


@dataclass(frozen=True)
class MergeRecipe:
    """A validated merge recipe (``recipes/merge/*.yaml``), overrides applied."""

    path: Path
    name: str
    version: str
    sha256: str
    method: str
    base_model: str
    models: tuple[MergeModel, ...]
    dtype: str
    output: Path
    seed: int
    normalize: bool
    adapter_merge_dtype: str = "float32"
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE
    overrides: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        """The recipe's values as the manifest records them."""
        return {
            "method": self.method,
            "base_model": self.base_model,
            "models": [asdict(entry) for entry in self.models],
            "dtype": self.dtype,
            "output": str(self.output),
            "seed": self.seed,
            "normalize": self.normalize,
            "adapter_merge_dtype": self.adapter_merge_dtype,
            "max_shard_size": self.max_shard_size,
        }


def _problem(path: Path, key: str, message: str, fix: str) -> MergeRecipeError:
    return MergeRecipeError(f"{path}: `{key}`: {message} Fix: {fix}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_size(text: str | int) -> int:
    """``"5GB"`` -> 5_000_000_000 (decimal units, as transformers' ``max_shard_size``)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?B)\s*", str(text).upper())
    if not match:
        raise ValueError(f"{text!r} is not a size like 5GB or 500MB")
    factor = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}[match.group(2)]
    return int(float(match.group(1)) * factor)


def _suggest(key: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    return f"did you mean `{close[0]}`? " if close else ""


def _apply_overrides(path: Path, raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    values = dict(raw)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in TOP_LEVEL_KEYS:
            raise _problem(
                path,
                key,
                "is not a merge recipe key (override).",
                f"{_suggest(key, list(TOP_LEVEL_KEYS))}keys: {', '.join(TOP_LEVEL_KEYS)}.",
            )
        if key == "models" and isinstance(value, (list, tuple)) and all(isinstance(item, (str, Path)) for item in value):
            current = raw.get("models")
            if not isinstance(current, list):
                raise _problem(
                    path, "models", "the recipe has no list of models to replace the paths of.", "write `models:` in the recipe."
                )
            if len(value) != len(current):
                raise _problem(
                    path,
                    "models",
                    f"{len(value)} model path(s) given to replace the recipe's {len(current)}.",
                    f"give exactly {len(current)} paths, in the recipe's order (or none).",
                )
            values["models"] = [
                {**entry, "model": str(new)} if isinstance(entry, dict) else entry
                for entry, new in zip(current, value, strict=True)
            ]
        else:
            values[key] = str(value) if isinstance(value, Path) else value
    return values


def _validate_model(path: Path, index: int, entry: Any) -> MergeModel:
    where = f"models[{index}]"
    if not isinstance(entry, dict):
        raise _problem(
            path, where, f"is {type(entry).__name__}, not a mapping.", "write `- model: ...`, `weight: 0.5`, `density: 0.5`."
        )
    for key in entry:
        if key not in MODEL_KEYS:
            raise _problem(
                path,
                f"{where}.{key}",
                "is not a model key.",
                f"{_suggest(str(key), list(MODEL_KEYS))}keys: {', '.join(MODEL_KEYS)}.",
            )
    for key in REQUIRED_MODEL_KEYS:
        if entry.get(key) is None:
            raise _problem(path, f"{where}.{key}", "is missing (or has no value).", f"write `{key}:` ({MODEL_KEYS[key]}).")
    model, weight, density = entry["model"], entry["weight"], entry["density"]
    adapter_base = entry.get("adapter_base")
    if adapter_base is not None and (not isinstance(adapter_base, str) or not adapter_base.strip()):
        raise _problem(
            path, f"{where}.adapter_base", f"{adapter_base!r} is not a path or hub id.", "write e.g. `adapter_base: BioMistral/BioMistral-7B`."
        )
    if not isinstance(model, str) or not model.strip():
        raise _problem(path, f"{where}.model", f"{model!r} is not a path or hub id.", "write a folder or an org/name hub id.")
    if not _is_number(weight) or not math.isfinite(weight):
        raise _problem(path, f"{where}.weight", f"{weight!r} is not a finite number.", "write e.g. `weight: 0.5`.")
    if not _is_number(density) or not (0 < density <= 1):
        raise _problem(
            path,
            f"{where}.density",
            f"{density!r} is outside (0, 1].",
            "write the fraction of the task vector kept, e.g. `density: 0.5`.",
        )
    return MergeModel(model=model, weight=float(weight), density=float(density), adapter_base=adapter_base)


def _read_recipe_mapping(path: Path) -> dict[str, Any]:
    """The recipe file's YAML mapping; an error when the file is missing, not YAML or not a mapping."""
    import yaml

    if not path.is_file():
        raise MergeRecipeError(f"{path}: no such recipe file. Fix: give a file under recipes/merge/.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise MergeRecipeError(f"{path}: not valid YAML ({error}).") from error
    if not isinstance(raw, dict):
        raise MergeRecipeError(f"{path}: a merge recipe is a YAML mapping, got {type(raw).__name__}.")
    return raw


def _read_recipe_header(path: Path) -> dict[str, str]:
    """The ``# recipe:`` / ``# version:`` / ``# source:`` header, checked like the other recipes'."""
    from medfactory.recipes.recipe_file import read_header

    header = read_header(path)
    for key in ("recipe", "version", "source"):
        if not header.get(key):
            raise _problem(
                path,
                f"# {key}:",
                "is missing from the header comment.",
                f"start the file with `# {key}: ...` like the other recipes.",
            )
    if header["recipe"] != path.stem:
        raise _problem(
            path, "# recipe:", f"says {header['recipe']!r} but the file is {path.name}.", f"write `# recipe: {path.stem}`."
        )
    if not VERSION_RE.match(header["version"]):
        raise _problem(path, "# version:", f"{header['version']!r} is not x.y.z.", "write e.g. `# version: 1.0.0`.")
    return header


def _check_top_level_keys(path: Path, raw: dict[str, Any]) -> None:
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise _problem(
                path,
                str(key),
                "is not a merge recipe key.",
                f"{_suggest(str(key), list(TOP_LEVEL_KEYS))}keys: {', '.join(TOP_LEVEL_KEYS)}.",
            )


def _check_required(path: Path, values: dict[str, Any]) -> None:
    for key in REQUIRED_TOP_LEVEL:
        if values.get(key) is None:
            raise _problem(path, key, "is missing (or has no value).", f"write `{key}:` ({TOP_LEVEL_KEYS[key]}).")


def _validate_method(path: Path, method: Any) -> str:
    if method not in METHODS:
        raise _problem(path, "method", f"{method!r} is not a merge method here.", f"write one of {', '.join(METHODS)}.")
    return method


def _validate_base_model(path: Path, base_model: Any) -> str:
    if not isinstance(base_model, str) or not base_model.strip():
        raise _problem(
            path, "base_model", f"{base_model!r} is not a path or hub id.", "write e.g. `base_model: BioMistral/BioMistral-7B`."
        )
    return base_model


def _validate_models(path: Path, models: Any) -> tuple[MergeModel, ...]:
    if not isinstance(models, list) or not models:
        raise _problem(
            path, "models", "must be a non-empty list.", "write `models:` with one `- model: ...` entry per model merged."
        )
    return tuple(_validate_model(path, index, entry) for index, entry in enumerate(models))


def _validate_dtypes(path: Path, values: dict[str, Any]) -> tuple[str, str]:
    """(output dtype, adapter merge dtype)."""
    dtype = values["dtype"]
    if dtype not in DTYPES:
        raise _problem(path, "dtype", f"{dtype!r} is not an output dtype.", f"write one of {', '.join(DTYPES)}.")
    adapter_dtype = values.get("adapter_merge_dtype") or "float32"
    if adapter_dtype not in DTYPES:
        raise _problem(path, "adapter_merge_dtype", f"{adapter_dtype!r} is not a dtype.", f"write one of {', '.join(DTYPES)}.")
    return dtype, adapter_dtype


def _validate_seed(path: Path, seed: Any, method: str) -> int:
    if seed is None:
        if method.startswith("dare"):
            raise _problem(path, "seed", f"is missing: {method} drops entries at random.", "write e.g. `seed: 42`.")
        seed = 0  # ties draws nothing at random
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise _problem(path, "seed", f"{seed!r} is not a non-negative integer.", "write e.g. `seed: 42`.")
    return seed


def _validate_normalize(path: Path, normalize: Any, method: str) -> bool:
    if normalize is None:
        normalize = DEFAULT_NORMALIZE[method]
    if not isinstance(normalize, bool):
        raise _problem(
            path, "normalize", f"{normalize!r} is not true or false.", "write `normalize: true` or `normalize: false`."
        )
    return normalize


def _validate_max_shard_size(path: Path, max_shard: Any) -> str:
    max_shard = max_shard or DEFAULT_MAX_SHARD_SIZE
    try:
        if parse_size(max_shard) <= 0:
            raise ValueError("must be positive")
    except ValueError as error:
        raise _problem(path, "max_shard_size", f"{max_shard!r}: {error}.", "write e.g. `max_shard_size: 5GB`.") from error
    return str(max_shard)


def _validate_output(path: Path, output: Any) -> Path:
    if not isinstance(output, str) or not output.strip():
        raise _problem(path, "output", f"{output!r} is not a folder path.", "write e.g. `output: saves/spanish_medical_ties`.")
    return Path(output)


def _recorded_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The overrides that were given (not None), paths as strings, as the manifest records them."""
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in (overrides or {}).items() if value is not None}


def load_merge_recipe(recipe_path: Path, overrides: dict[str, Any] | None = None) -> MergeRecipe:
    """Read and validate a merge recipe; ``overrides`` replace top-level values (``models``: a list of
    paths replaces the models' paths in order). Every error names the file and the key."""
    from medfactory.base.atomic import sha256_file

    path = Path(recipe_path)
    raw = _read_recipe_mapping(path)
    header = _read_recipe_header(path)
    _check_top_level_keys(path, raw)
    values = _apply_overrides(path, raw, dict(overrides or {}))
    _check_required(path, values)
    # Checked in this order so that a recipe with several problems always reports the same one first.
    method = _validate_method(path, values["method"])
    base_model = _validate_base_model(path, values["base_model"])
    models = _validate_models(path, values["models"])
    dtype, adapter_dtype = _validate_dtypes(path, values)
    seed = _validate_seed(path, values.get("seed"), method)
    normalize = _validate_normalize(path, values.get("normalize"), method)
    max_shard_size = _validate_max_shard_size(path, values.get("max_shard_size"))
    output = _validate_output(path, values["output"])
    return MergeRecipe(
        path=path,
        name=header["recipe"],
        version=header["version"],
        sha256=sha256_file(path),
        method=method,
        base_model=base_model,
        models=models,
        dtype=dtype,
        output=output,
        seed=seed,
        normalize=normalize,
        adapter_merge_dtype=adapter_dtype,
        max_shard_size=max_shard_size,
        overrides=_recorded_overrides(overrides),
    )



# --------------------------------------------------------------------------------------------------
# Per-tensor arithmetic (float32); the tests check these against values computed by hand
# --------------------------------------------------------------------------------------------------


def trim_to_density(delta, density: float):
    """TIES' trim: keep exactly ``k = max(1, int(density * numel))`` largest magnitudes, zero the rest.

    Magnitudes equal to the k-th largest are kept in index order until k are kept (deterministic).
    """
    import torch

    if density >= 1 or delta.numel() == 0:
        return delta
    flat = delta.reshape(-1)
    n = flat.numel()
    k = max(1, int(density * n))
    magnitude = flat.abs()
    threshold = torch.kthvalue(magnitude, n - k + 1).values  # the k-th largest magnitude
    keep = magnitude > threshold
    missing = k - int(keep.sum())
    if missing > 0:
        keep[torch.nonzero(magnitude == threshold).reshape(-1)[:missing]] = True
    return torch.where(keep, flat, torch.zeros((), dtype=flat.dtype)).view_as(delta)


def tensor_generator(seed: int, model_index: int, tensor_name: str):
    """The RNG of one model's drop mask for one tensor: independent of processing order and sharding."""
    import torch

    digest = hashlib.sha256(f"{seed}\x00{model_index}\x00{tensor_name}".encode()).digest()
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return generator


def dare_keep_mask(shape, density: float, generator):
    """DARE's Bernoulli(density) keep mask (True = kept)."""
    import torch

    if density >= 1:
        return torch.ones(shape, dtype=torch.bool)
    return torch.rand(shape, generator=generator, dtype=torch.float32) < density


def dare_drop(delta, density: float, keep_mask):
    """DARE's drop and rescale: kept entries divided by ``density``, dropped ones zero."""
    import torch

    if density >= 1:
        return delta
    return torch.where(keep_mask, delta / density, torch.zeros((), dtype=delta.dtype))


def elect_and_merge(deltas: Sequence, weights: Sequence[float], normalize: bool):
    """TIES' sign election and disjoint merge of already sparsified task vectors.

    The elected sign is that of ``sum_i w_i delta_i`` (a zero sum elects +); an entry of model i counts
    when ``sign(w_i delta_i)`` equals it (zeros never do). ``normalize`` divides by the sum of the
    agreeing weights (1 where none agrees).
    """
    import torch

    weighted = [delta * float(weight) for delta, weight in zip(deltas, weights, strict=True)]
    total = torch.zeros_like(weighted[0])
    for item in weighted:
        total += item
    elected = torch.where(total >= 0, 1.0, -1.0).to(total.dtype)
    del total
    mixed = torch.zeros_like(weighted[0])
    divisor = torch.zeros_like(weighted[0])
    for item, weight in zip(weighted, weights, strict=True):
        agree = torch.sign(item) == elected
        mixed += torch.where(agree, item, torch.zeros((), dtype=item.dtype))
        divisor += agree.to(item.dtype) * float(weight)
    if normalize:
        divisor[divisor == 0] = 1.0
        mixed /= divisor
    return mixed


def weighted_sum(deltas: Sequence, weights: Sequence[float], normalize: bool):
    """Linear combination ``sum_i w_i delta_i``; ``normalize`` divides by ``sum_i w_i`` (if not ~0)."""
    import torch

    mixed = torch.zeros_like(deltas[0])
    for delta, weight in zip(deltas, weights, strict=True):
        mixed += delta * float(weight)
    total = float(sum(weights))
    if normalize and abs(total) >= 1e-8:
        mixed /= total
    return mixed


def ties_merge(deltas: Sequence, weights: Sequence[float], densities: Sequence[float], normalize: bool = True):
    """TIES on whole task vectors: trim each to its density, elect signs, disjoint (weighted) mean."""
    trimmed = [trim_to_density(delta, density) for delta, density in zip(deltas, densities, strict=True)]
    return elect_and_merge(trimmed, weights, normalize)


def dare_merge(
    deltas: Sequence,
    weights: Sequence[float],
    densities: Sequence[float],
    keep_masks: Sequence,
    elect_sign: bool,
    normalize: bool = False,
):
    """DARE on whole task vectors with the given keep masks: drop, rescale by 1/density, then the TIES
    election and disjoint merge (``elect_sign``, i.e. dare_ties) or a weighted sum (dare_linear)."""
    dropped = [dare_drop(delta, density, mask) for delta, density, mask in zip(deltas, densities, keep_masks, strict=True)]
    if elect_sign:
        return elect_and_merge(dropped, weights, normalize)
    return weighted_sum(dropped, weights, normalize)


def merge_tensor(
    method: str,
    name: str,
    base,
    tensors: Sequence,
    weights: Sequence[float],
    densities: Sequence[float],
    normalize: bool,
    seed: int = 0,
):
    """``base + merged task vector`` for one tensor, in float32 (the caller casts to the output dtype)."""
    base32 = base.to(dtype=_torch().float32)
    deltas = [tensor.to(dtype=base32.dtype) - base32 for tensor in tensors]
    if method == "ties":
        mixed = ties_merge(deltas, weights, densities, normalize)
    elif method in ("dare_ties", "dare_linear"):
        masks = [
            dare_keep_mask(base32.shape, density, tensor_generator(seed, index, name)) for index, density in enumerate(densities)
        ]
        mixed = dare_merge(deltas, weights, densities, masks, elect_sign=method == "dare_ties", normalize=normalize)
    else:
        raise ValueError(f"unknown merge method {method!r}; choose one of {', '.join(METHODS)}")
    return base32 + mixed


def _torch():
    import torch

    return torch


# --------------------------------------------------------------------------------------------------
# Reading checkpoints, tensor by tensor
# --------------------------------------------------------------------------------------------------

_ST_FLOATS = {"F16", "BF16", "F32", "F64"}


def _st_dtype_name(dtype) -> str:
    torch = _torch()
    names = {
        torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
    }  # fmt: skip
    if dtype not in names:
        raise MergeError(f"dtype {dtype} cannot be written to safetensors here")
    return names[dtype]


def _torch_dtype(name: str):
    return getattr(_torch(), name)


WEIGHTS_FIX = (
    "Fix: download the model again (an interrupted download or copy leaves a truncated file), or re-save it with "
    "save_pretrained(safe_serialization=True) or `llamafactory-cli export`."
)


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a model folder: those its ``model.safetensors.index.json`` lists, else every ``*.safetensors``."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return sorted(folder.glob("*.safetensors"))
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = {str(name) for name in weight_map.values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise MergeError(f"{index}: not a readable shard index (no `weight_map` of tensor -> file). {WEIGHTS_FIX}") from error
    missing = sorted(name for name in names if not (folder / name).is_file())
    if missing:
        raise MergeError(f"{index} lists {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}, not in {folder}. {WEIGHTS_FIX}")
    return sorted(folder / name for name in names)


def open_safetensors(stack: contextlib.ExitStack, file: Path) -> Any:
    """``safe_open`` of ``file`` on ``stack``; a truncated or damaged file is a MergeError naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        return stack.enter_context(safe_open(str(file), framework="pt", device="cpu"))
    except (SafetensorError, OSError) as error:
        size = file.stat().st_size if file.is_file() else 0
        raise MergeError(f"{file}: not a readable safetensors file ({error}; {size} bytes). {WEIGHTS_FIX}") from error


def check_safetensors(folder: Path) -> None:
    """Open (header only) every safetensors file of ``folder``: a truncated one fails before any work starts."""
    with contextlib.ExitStack() as stack:
        for file in safetensors_files(folder):
            open_safetensors(stack, file)


class Checkpoint:
    """The safetensors tensors of a model folder, opened lazily (memory-mapped, one tensor at a time)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        files = safetensors_files(self.folder)
        if not files:
            raise MergeError(
                f"{self.folder}: no *.safetensors weights (only {', '.join(sorted(p.name for p in self.folder.iterdir())) or 'nothing'}). "
                "Fix: re-save it with save_pretrained(safe_serialization=True) or `llamafactory-cli export`."
            )
        self._stack = contextlib.ExitStack()
        self.location: dict[str, Any] = {}
        self.order: list[str] = []
        for file in files:
            try:
                handle = open_safetensors(self._stack, file)
            except MergeError:
                self._stack.close()
                raise
            for name in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                if name in self.location:
                    raise MergeError(f"{self.folder}: tensor {name} is in two shards")
                self.location[name] = handle
                self.order.append(name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    def names(self) -> list[str]:
        return list(self.order)

    def shape_and_dtype(self, name: str) -> tuple[tuple[int, ...], str]:
        piece = self.location[name].get_slice(name)
        return tuple(piece.get_shape()), piece.get_dtype()

    def get(self, name: str):
        return self.location[name].get_tensor(name)


# --------------------------------------------------------------------------------------------------
# Writing safetensors shards as a stream (header first: shapes and dtypes are known in advance)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Planned:
    name: str
    shape: tuple[int, ...]
    dtype: Any  # torch dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _plan_shards(entries: list[_Planned], max_bytes: int) -> list[list[_Planned]]:
    shards: list[list[_Planned]] = [[]]
    size = 0
    for entry in entries:
        if shards[-1] and size + entry.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    return shards


class _StreamingSafetensorsWriter:
    """One safetensors file written tensor by tensor, in a planned order; sha256 computed on the way."""

    def __init__(self, path: Path, entries: list[_Planned]) -> None:
        self.path = path
        self.entries = entries
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for entry in entries:
            header[entry.name] = {
                "dtype": _st_dtype_name(entry.dtype),
                "shape": list(entry.shape),
                "data_offsets": [offset, offset + entry.nbytes],
            }
            offset += entry.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * ((8 - len(encoded) % 8) % 8)
        self._handle = open(path, "wb")  # noqa: SIM115 - written tensor by tensor, closed by close()
        self._digest = hashlib.sha256()
        self._position = 0
        self._emit(len(encoded).to_bytes(8, "little"))
        self._emit(encoded)

    def _emit(self, data) -> None:
        self._handle.write(data)
        self._digest.update(data)

    def write(self, name: str, tensor) -> None:
        torch = _torch()
        expected = self.entries[self._position]
        if name != expected.name or tuple(tensor.shape) != expected.shape or tensor.dtype != expected.dtype:
            raise MergeError(f"internal: wrote {name} {tuple(tensor.shape)} {tensor.dtype}, planned {expected}")
        if tensor.numel():
            data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            self._emit(memoryview(data))
        self._position += 1

    def abort(self) -> None:
        """Close the unfinished file (the staging folder it lives in is removed by the caller)."""
        self._handle.close()

    def close(self) -> str:
        import os

        if self._position != len(self.entries):
            raise MergeError(f"internal: {self.path} got {self._position} of {len(self.entries)} tensors")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        return self._digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Resolving inputs
# --------------------------------------------------------------------------------------------------


def resolve_model_dir(reference: str, key: str, recipe_path: Path) -> Path:
    """A local folder as is; otherwise a Hugging Face Hub id, from the local cache when offline."""
    local = Path(reference).expanduser()
    if local.is_dir():
        return local.resolve()
    if local.exists():
        raise _problem(recipe_path, key, f"{reference!r} is a file, not a model folder.", "give the model's folder.")
    looks_local = (
        local.is_absolute()
        or reference.startswith((".", "~"))
        or reference.count("/") != 1
        or Path(reference.split("/")[0]).is_dir()
    )
    if looks_local:  # e.g. saves/<run>: a local path that does not exist (yet), never a hub id
        raise _problem(
            recipe_path,
            key,
            f"{reference!r}: no such folder (from {Path.cwd()}).",
            "run the recipe that writes it first (e.g. recipes/spanish_medical_dpo.yaml), run from the repository root, "
            "or pass another path (--base-model / --model).",
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                reference,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"],
            )
        )
    except Exception as error:  # any hub failure: not found, offline, gated, no network
        raise _problem(
            recipe_path,
            key,
            f"{reference!r} is not a local folder and could not be taken from the Hugging Face Hub ({type(error).__name__}: {str(error)[:200]}).",
            "train/export it first, give a local folder, or download the hub model (unset HF_HUB_OFFLINE, accept its licence).",
        ) from error


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def merge_adapter_into_base(base_dir: Path, adapter_dir: Path, target: Path, dtype: str) -> Path:
    """PEFT's ``merge_and_unload`` of a LoRA adapter into the base, saved as safetensors in ``target``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    logger.info("merging LoRA adapter %s into %s (%s) in %s", adapter_dir, base_dir, dtype, target)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=_torch_dtype(dtype), trust_remote_code=False)
    merged = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False).merge_and_unload()
    merged.save_pretrained(target, safe_serialization=True)
    del merged, model
    return target


# --------------------------------------------------------------------------------------------------
# The merge
# --------------------------------------------------------------------------------------------------


def _check_compatible(recipe: MergeRecipe, base: Checkpoint, others: list[Checkpoint]) -> None:
    base_names = set(base.names())
    for index, checkpoint in enumerate(others):
        names = set(checkpoint.names())
        missing, extra = sorted(base_names - names), sorted(names - base_names)
        if missing or extra:
            detail = "; ".join(
                part
                for part in (
                    f"missing {len(missing)}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "",
                    f"not in the base {len(extra)}: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}" if extra else "",
                )
                if part
            )
            raise MergeError(
                f"{recipe.path}: `models[{index}]` ({checkpoint.folder}) does not have the base's tensors ({detail}). "
                "TIES/DARE need models fine-tuned from base_model, with the same architecture and vocabulary."
            )
        for name in base.names():
            base_shape, _ = base.shape_and_dtype(name)
            shape, _ = checkpoint.shape_and_dtype(name)
            if shape != base_shape:
                raise MergeError(
                    f"{recipe.path}: `models[{index}]` ({checkpoint.folder}): tensor {name} has shape {list(shape)}, "
                    f"the base {list(base_shape)}. A resized vocabulary or another architecture cannot be merged here."
                )
        _check_lineage(recipe, index, base, checkpoint)


def _probe_tensor(base: Checkpoint) -> str | None:
    """The tensor the lineage check compares: the first weight matrix of the decoder (not the vocabulary)."""
    for name in sorted(base.names()):
        shape, dtype = base.shape_and_dtype(name)
        if len(shape) == 2 and dtype in _ST_FLOATS and not re.search(r"embed|lm_head|wte|wpe", name):
            return name
    return None


def relative_distance(model_tensor, base_tensor) -> float:
    """``||model - base|| / ||base||`` in float32: small for a fine-tune of the base, ~1.4 for an unrelated model."""
    torch = _torch()
    base32 = base_tensor.to(torch.float32)
    norm = float(torch.linalg.vector_norm(base32))
    return float(torch.linalg.vector_norm(model_tensor.to(torch.float32) - base32)) / norm if norm else 0.0


def _check_lineage(recipe: MergeRecipe, index: int, base: Checkpoint, checkpoint: Checkpoint) -> None:
    """Refuse a model whose weights are not near the base's: same shapes, another base (a task vector of nothing)."""
    name = _probe_tensor(base)
    if name is None:
        return
    distance = relative_distance(checkpoint.get(name), base.get(name))
    if distance > MAX_RELATIVE_DISTANCE:
        raise MergeError(
            f"{recipe.path}: `models[{index}]` ({recipe.models[index].model}, read from {checkpoint.folder}) is not a fine-tune of "
            f"`base_model` ({recipe.base_model}): tensor {name} differs from the base's by {distance:.2f} of its norm (a fine-tune "
            f"moves it by a small fraction; unrelated weights of one shape differ by ~1.4). Fix: merge models fine-tuned from "
            "base_model, or make base_model the model they were fine-tuned from."
        )


def read_config(folder: Path) -> dict[str, Any] | None:
    """A model folder's config.json (None when it has none)."""
    path = Path(folder) / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def architecture_facts(config: dict[str, Any]) -> dict[str, Any]:
    """The :data:`ARCHITECTURE_FIELDS` a config states (a multimodal config's ``text_config`` as ``text_config.<field>``).

    ``rope_theta`` is read from ``rope_parameters`` too, where transformers 5 writes it.
    """
    facts: dict[str, Any] = {}
    for prefix, part in (("", config), ("text_config.", config.get("text_config"))):
        if not isinstance(part, dict):
            continue
        values = dict(part)
        if values.get("rope_theta") is None and isinstance(values.get("rope_parameters"), dict):
            values["rope_theta"] = values["rope_parameters"].get("rope_theta")
        for key in ARCHITECTURE_FIELDS:
            if values.get(key) is not None:
                facts[prefix + key] = values[key]
    return facts


def check_architectures(recipe: MergeRecipe, base_dir: Path, inputs: Sequence[_Input]) -> None:
    """Refuse, before anything heavy runs, a model whose config differs from the base's in architecture or shape.

    An adapter is checked through the model it is applied to. The error names both models and the field.
    """
    base_config = read_config(base_dir)
    if base_config is None:
        raise _problem(recipe.path, "base_model", f"{base_dir} has no config.json.", "give a Hugging Face model folder.")
    base_facts = architecture_facts(base_config)
    for item in inputs:
        folder = item.adapter_base_dir or item.folder
        what = f"`models[{item.index}]` ({item.entry.model}" + (f", a LoRA adapter on {item.adapter_base})" if item.adapter_base_dir else ")")
        config = read_config(folder)
        if config is None:
            raise MergeError(f"{recipe.path}: {what}: {folder} has no config.json; its architecture cannot be checked. Fix: give a Hugging Face model folder.")
        facts = architecture_facts(config)
        for key in [key for key in base_facts if key in facts]:  # in ARCHITECTURE_FIELDS' order: the same field reported first
            if facts[key] != base_facts[key]:
                raise MergeError(
                    f"{recipe.path}: {what} and `base_model` ({recipe.base_model}) differ in {key}: {facts[key]!r} vs {base_facts[key]!r}. "
                    "TIES/DARE subtract the base from each model, so every model must be a fine-tune of base_model (same architecture "
                    "and shapes). Fix: merge models of base_model's family, or set base_model to the model they were fine-tuned from."
                )


def _copy_base_files(base_dir: Path, staging: Path, dtype: str) -> list[str]:
    copied = []
    for item in sorted(base_dir.iterdir()):
        if not item.is_file() or item.name in _NOT_COPIED or item.name.endswith(_WEIGHT_SUFFIXES):
            continue
        shutil.copy2(item, staging / item.name)
        copied.append(item.name)
    config_path = staging / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["dtype"] = dtype
        if "torch_dtype" in config:
            config["torch_dtype"] = dtype
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return copied


def _versions() -> dict[str, str | None]:
    return package_versions(("medfactory", "torch", "safetensors", "transformers", "peft"))


@dataclass(frozen=True)
class _Input:
    """One entry of ``models``, resolved: its folder and, for a LoRA adapter, the model it is applied to."""

    index: int
    entry: MergeModel
    folder: Path
    adapter_base: str | None = None
    adapter_base_dir: Path | None = None
    adapter_base_source: str | None = None


def _resolve_adapter_base(recipe: MergeRecipe, index: int, entry: MergeModel, folder: Path) -> tuple[str, Path, str]:
    """(reference, folder, where it came from) of the model a LoRA adapter is applied to before its task vector is taken."""
    declared = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if entry.adapter_base:
        reference, source = entry.adapter_base, "recipe"
    elif declared:
        reference, source = declared, "adapter_config.json base_model_name_or_path"
    else:
        reference, source = recipe.base_model, "base_model (the adapter names no base)"
    return reference, resolve_model_dir(reference, f"models[{index}].adapter_base", recipe.path), source


def _resolve_inputs(recipe: MergeRecipe, output: Path) -> tuple[Path, list[_Input]]:
    """The base's folder and every model's; refuses an output over any input."""
    base_dir = resolve_model_dir(recipe.base_model, "base_model", recipe.path)
    inputs = []
    for index, entry in enumerate(recipe.models):
        folder = resolve_model_dir(entry.model, f"models[{index}].model", recipe.path)
        if is_adapter(folder):
            inputs.append(_Input(index, entry, folder, *_resolve_adapter_base(recipe, index, entry, folder)))
        else:
            inputs.append(_Input(index, entry, folder))
    for key, folder in [("base_model", base_dir), *((f"models[{item.index}].model", item.folder) for item in inputs)]:
        if folder == output or output in folder.parents:
            raise _problem(
                recipe.path,
                "output",
                f"{output} would overwrite the input `{key}` ({folder}).",
                "write the merge to a new folder.",
            )
    return base_dir, inputs


def _lora_adapter_config(recipe: MergeRecipe, index: int, folder: Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``; only LoRA adapters can be merged into the base."""
    adapter_config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    if adapter_config.get("peft_type", "LORA") != "LORA":
        raise _problem(
            recipe.path,
            f"models[{index}].model",
            f"{folder} is a {adapter_config.get('peft_type')} adapter.",
            "only LoRA adapters are merged into the base here; export a full model first.",
        )
    return adapter_config


def _prepare_models(recipe: MergeRecipe, inputs: list[_Input], output: Path, stack: contextlib.ExitStack) -> tuple[list[dict[str, Any]], list[Path]]:
    """The manifest record and the checkpoint folder of every model. A LoRA adapter is merged into the model it
    was trained on first (``adapter_base``), into a scratch folder beside ``output`` that ``stack`` removes at the end."""
    scratch: Path | None = None
    records: list[dict[str, Any]] = []
    folders: list[Path] = []
    for item in inputs:
        entry = item.entry
        record: dict[str, Any] = {"model": entry.model, "path": str(item.folder), "weight": entry.weight, "density": entry.density}
        if item.adapter_base_dir is not None:
            adapter_config = _lora_adapter_config(recipe, item.index, item.folder)
            if scratch is None:
                scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f".{output.name}.adapters.", dir=output.parent)))
            target = merge_adapter_into_base(item.adapter_base_dir, item.folder, scratch / f"model-{item.index}", recipe.adapter_merge_dtype)
            record.update(
                kind="lora_adapter",
                merged_into=item.adapter_base,
                merged_into_path=str(item.adapter_base_dir),
                merged_into_from=item.adapter_base_source,
                adapter_merge_dtype=recipe.adapter_merge_dtype,
                adapter_declared_base=adapter_config.get("base_model_name_or_path"),
                adapter_config_sha256=hashlib.sha256((item.folder / "adapter_config.json").read_bytes()).hexdigest(),
            )
            folders.append(target)
        else:
            record["kind"] = "full"
            folders.append(item.folder)
        records.append(record)
    return records, folders


def _plan_tensors(base: Checkpoint, out_dtype: Any) -> list[_Planned]:
    """Every tensor of the base in its order: floating point ones in the output dtype, the others as they are."""
    planned = []
    for name in base.names():
        shape, st_dtype = base.shape_and_dtype(name)
        dtype = out_dtype if st_dtype in _ST_FLOATS else base.get(name).dtype
        planned.append(_Planned(name, shape, dtype))
    return planned


def _shard_file_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{number:05d}-of-{count:05d}.safetensors" for number in range(1, count + 1)]


class _TensorMerger:
    """The output tensor of each name: floating point tensors merged, the others copied from the base (counted)."""

    def __init__(self, recipe: MergeRecipe, base: Checkpoint, others: list[Checkpoint], out_dtype: Any) -> None:
        self.recipe = recipe
        self.base = base
        self.others = others
        self.out_dtype = out_dtype
        self.weights = [entry.weight for entry in recipe.models]
        self.densities = [entry.density for entry in recipe.models]
        self.counts = {"merged": 0, "copied_from_base": 0}

    def tensor(self, name: str):
        base_tensor = self.base.get(name)
        if not base_tensor.is_floating_point():
            self.counts["copied_from_base"] += 1
            return base_tensor
        recipe = self.recipe
        merged = merge_tensor(
            recipe.method,
            name,
            base_tensor,
            [checkpoint.get(name) for checkpoint in self.others],
            self.weights,
            self.densities,
            recipe.normalize,
            recipe.seed,
        )
        self.counts["merged"] += 1
        return merged.to(self.out_dtype)


def _write_shard(path: Path, shard: list[_Planned], merger: _TensorMerger, progress: Any) -> dict[str, Any]:
    """Stream one output shard; returns its sha256 and size. An unfinished file is closed, never left open."""
    writer = _StreamingSafetensorsWriter(path, shard)
    try:
        for entry in shard:
            writer.write(entry.name, merger.tensor(entry.name))
            progress.update(1)
        digest = writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"sha256": digest, "bytes": path.stat().st_size}


def _write_index(staging: Path, files: list[str], shards: list[list[_Planned]], planned: list[_Planned]) -> None:
    index = {
        "metadata": {"total_size": sum(entry.nbytes for entry in planned)},
        "weight_map": {entry.name: file for file, shard in zip(files, shards, strict=True) for entry in shard},
    }
    (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _engine_record() -> dict[str, Any]:
    """How the merge was computed, in words, with the versions of the packages that computed it."""
    return {
        "name": "medfactory.run.merge",
        "task_vectors": "theta_model - theta_base per tensor, float32",
        "trim": "exactly max(1, int(density * numel)) largest magnitudes per tensor (equal ones at the cut: lowest index first)",
        "dare": "Bernoulli(density) keep mask from a torch.Generator per (seed, model index, tensor name); survivors / density",
        "sign_election": "sign of sum_i weight_i * delta_i (zero -> +); dare_linear: none",
        "combine": "normalize: sum_i w_i m_i delta_i / sum_i w_i m_i; else sum_i w_i m_i delta_i",
        "versions": _versions(),
    }


def _merge_manifest(
    recipe: MergeRecipe,
    started: dt.datetime,
    base_dir: Path,
    model_records: list[dict[str, Any]],
    counts: dict[str, int],
    copied: list[str],
    outputs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The content of ``merge_manifest.json``: the recipe, its overrides, the inputs, the values and the outputs."""
    return {
        "kind": "medfactory merge",
        "created_utc": started.replace(microsecond=0).isoformat(),
        "seconds": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
        "recipe": {"path": str(recipe.path), "name": recipe.name, "version": recipe.version, "sha256": recipe.sha256},
        "overrides": recipe.overrides,
        "method": recipe.method,
        "values": {
            "normalize": recipe.normalize,
            "dtype": recipe.dtype,
            "seed": recipe.seed,
            "adapter_merge_dtype": recipe.adapter_merge_dtype,
            "max_shard_size": recipe.max_shard_size,
        },
        "base_model": {"model": recipe.base_model, "path": str(base_dir)},
        "models": model_records,
        "engine": _engine_record(),
        "tensors": counts,
        "files_from_base": copied,
        "outputs": outputs,
    }


def run_merge(recipe_path: Path, overrides: dict | None = None) -> Path:
    """Run the merge of a ``recipes/merge/*.yaml`` recipe; returns the merged checkpoint's folder.

    ``overrides``: top-level recipe keys (``base_model``, ``output``, ``dtype``, ``seed``, ...); ``models``
    as a list of paths replaces the models' paths in order. The output is written to a staging folder
    beside it and renamed into place only when complete (a failure leaves any previous output intact).
    """
    from tqdm.auto import tqdm

    from medfactory.base.atomic import atomic_directory

    if sys.byteorder != "little":
        raise MergeError("safetensors are little-endian; this machine is not")
    recipe = load_merge_recipe(Path(recipe_path), overrides)
    output = recipe.output.expanduser().resolve()
    base_dir, inputs = _resolve_inputs(recipe, output)
    check_architectures(recipe, base_dir, inputs)  # before an adapter is merged: a wrong model fails in seconds
    for folder in dict.fromkeys([base_dir, *(item.folder for item in inputs), *(item.adapter_base_dir for item in inputs if item.adapter_base_dir)]):
        check_safetensors(folder)  # a truncated download fails here, named, not as a traceback mid-merge
    output.parent.mkdir(parents=True, exist_ok=True)
    out_dtype = _torch_dtype(recipe.dtype)
    started = dt.datetime.now(dt.UTC)

    with contextlib.ExitStack() as stack:
        model_records, model_dirs = _prepare_models(recipe, inputs, output, stack)
        base = stack.enter_context(Checkpoint(base_dir))
        others = [stack.enter_context(Checkpoint(folder)) for folder in model_dirs]
        _check_compatible(recipe, base, others)
        planned = _plan_tensors(base, out_dtype)
        shards = _plan_shards(planned, parse_size(recipe.max_shard_size))
        files = _shard_file_names(len(shards))
        merger = _TensorMerger(recipe, base, others, out_dtype)

        with atomic_directory(output) as staging:
            progress = stack.enter_context(tqdm(total=len(planned), unit="tensor", desc=f"{recipe.method} merge"))
            outputs = {file: _write_shard(staging / file, shard, merger, progress) for file, shard in zip(files, shards, strict=True)}
            if len(files) > 1:
                _write_index(staging, files, shards, planned)
            copied = _copy_base_files(base_dir, staging, recipe.dtype)
            manifest = _merge_manifest(recipe, started, base_dir, model_records, merger.counts, copied, outputs)
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("merged %d tensors (%s) into %s", merger.counts["merged"], recipe.method, output)
    return output
