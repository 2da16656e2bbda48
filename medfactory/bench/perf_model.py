"""Model FLOPs per token, GPU peaks and a memory estimate: the arithmetic behind ``medfactory bench``.

Computed from a model's configuration on the ``meta`` device (no weights), so it runs for the 7B
shapes on any laptop. Model FLOPs, as in MFU: matrix products only, attention counted causally,
frozen LoRA/QLoRA weights without their own gradient (4N + 6N_lora per token), DPO's reference
forward, a frozen vision tower's forward. The conventions and formulas are in docs/benchmarks.md
("Model FLOPs per token"); tests/test_perf_model.py checks them against torch's FLOP counter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TRAINING_MODES = ("full", "lora")

# Dense bf16 tensor-core peaks (TFLOP/s) from NVIDIA's data sheets (the "with sparsity" figures halved).
# Matched against torch.cuda.get_device_name(); the first matching key wins, so specific names come first.
PEAK_BF16_TFLOPS: dict[str, float] = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,  # SXM5 (torch reports "NVIDIA H100 80GB HBM3")
    "H200": 989.4,
    "H800": 989.4,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
    "A10": 125.0,
}


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its torch name, or None when it is not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return tflops
    return None


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs from a model, read off its configuration."""

    language_linear_params: int  # weights of every matrix product a text token goes through (output layer included)
    attention_widths: tuple[int, ...]  # per language layer: query heads x head dim
    attention_windows: tuple[int | None, ...]  # per language layer: sliding window, None for full causal attention
    vision_linear_params: int = 0
    vision_forward_flops_per_image: float = 0.0  # patch embedding, tower (linear and attention) and projector
    total_params: int = 0
    embedding_params: int = 0  # input embedding (a gather, no FLOPs); counted once when tied to the output layer
    hidden_size: int = 0
    vocab_size: int = 0

    @property
    def language_layers(self) -> int:
        return len(self.attention_widths)


def load_config(source: str | Path | dict):
    """A transformers config from a config.json path, a model directory or a dict."""
    from transformers import AutoConfig

    if isinstance(source, dict):
        values = dict(source)
    else:
        path = Path(source)
        values = json.loads((path / "config.json" if path.is_dir() else path).read_text(encoding="utf-8"))
    return AutoConfig.for_model(**values)


def model_class(config):
    """The transformers class named by the config's ``architectures``."""
    import transformers

    return getattr(transformers, config.architectures[0])


def model_shape(config) -> ModelShape:
    """Count the matrix-product weights of ``config``'s model, instantiated on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        model = model_class(config)(config)
    language = vision = vision_conv = projector = 0
    for name, module in model.named_modules():
        is_vision = "vision_tower" in name or "multi_modal_projector" in name
        if isinstance(module, torch.nn.Linear):
            if is_vision:
                vision += module.weight.numel()
            else:
                language += module.weight.numel()
        elif isinstance(module, torch.nn.Conv2d) and is_vision:
            vision_conv += module.weight.numel()  # the patch embedding: one application per patch
    for name, parameter in model.named_parameters():
        if name.endswith("mm_input_projection_weight"):  # Gemma 3's projector: a bare matrix, one product per image token
            projector += parameter.numel()
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    window = getattr(text, "sliding_window", None)
    layer_types = getattr(text, "layer_types", None)
    if layer_types:  # Gemma 3: local (sliding) and global layers interleaved
        windows = tuple(window if kind == "sliding_attention" else None for kind in layer_types)
    else:  # Mistral / LLaMA: a set sliding_window applies to every layer
        windows = (window,) * text.num_hidden_layers
    vision_config = getattr(config, "vision_config", None)
    vision_flops = 0.0
    if vision_config is not None:
        patches = (vision_config.image_size // vision_config.patch_size) ** 2
        attention = vision_config.num_hidden_layers * 4 * vision_config.hidden_size * patches * patches  # bidirectional
        vision_flops = 2 * patches * (vision + vision_conv) + attention + 2 * config.mm_tokens_per_image * projector
    embedding = model.get_input_embeddings().weight.numel()
    return ModelShape(
        language_linear_params=language,
        attention_widths=(text.num_attention_heads * head_dim,) * text.num_hidden_layers,
        attention_windows=windows,
        vision_linear_params=vision,
        vision_forward_flops_per_image=vision_flops,
        total_params=sum(p.numel() for p in model.parameters()),
        embedding_params=embedding,
        hidden_size=text.hidden_size,
        vocab_size=text.vocab_size,
    )


LORA_ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_params(config, rank: int, target: str) -> int:
    """Trainable weights of a LoRA of ``rank`` on ``target`` (LLaMA-Factory's ``lora_target``: a comma list of
    module names, or ``all``: every linear layer of the language model except the output layer; the
    vision tower and projector stay frozen). r x (in + out) per adapted layer."""
    import torch

    names = LORA_ALL_LINEAR if target == "all" else tuple(t.strip() for t in target.split(","))
    with torch.device("meta"):
        model = model_class(config)(config)
    total = 0
    for name, module in model.named_modules():
        frozen_tower = "vision_tower" in name or "multi_modal_projector" in name
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in names and not frozen_tower:
            total += rank * (module.in_features + module.out_features)
    return total


def mean_attended_keys(sequence_length: int, window: int | None, causal: bool = True) -> float:
    """Keys each query attends to, averaged over the positions of one sequence. ``causal=False`` counts the
    dense T x T products an eager kernel computes whatever the mask (the PaLM convention)."""
    if not causal:
        return float(sequence_length)
    if window is None or window >= sequence_length:
        return (sequence_length + 1) / 2
    # positions 1..window see 1..window keys; the rest see exactly `window`.
    return (window * (window + 1) / 2 + (sequence_length - window) * window) / sequence_length


def attention_forward_flops_per_token(shape: ModelShape, sequence_length: int, causal: bool = True) -> float:
    """QK^T and AV (2 products, 2 FLOPs per multiply-add) summed over the language layers."""
    return sum(
        4 * width * mean_attended_keys(sequence_length, window, causal)
        for width, window in zip(shape.attention_widths, shape.attention_windows, strict=True)
    )


@dataclass(frozen=True)
class FlopsPerToken:
    """Model FLOPs of one training token, split so the docs can show where they go."""

    weights_forward: float
    weights_backward: float
    attention: float
    reference_forward: float
    per_image: float

    @property
    def total(self) -> float:
        return self.weights_forward + self.weights_backward + self.attention + self.reference_forward


def training_flops_per_token(
    shape: ModelShape,
    sequence_length: int,
    mode: str,
    trainable_params: int,
    with_reference_model: bool = False,
    reference_adapter_params: int = 0,
    vision_trainable: bool = False,
    causal: bool = True,
) -> FlopsPerToken:
    """Model FLOPs per token of one training step, forward plus backward (see the module docstring).

    ``mode`` is ``full`` (every weight trained) or ``lora`` (base frozen, ``trainable_params`` adapter
    weights trained). ``with_reference_model`` adds DPO's reference forward pass; ``per_image`` is
    what each image costs in the vision tower.
    """
    if mode not in TRAINING_MODES:
        raise ValueError(f"mode must be one of {TRAINING_MODES}, not {mode!r}")
    n = shape.language_linear_params
    attention = attention_forward_flops_per_token(shape, sequence_length, causal)
    if mode == "full":
        forward, backward = 2 * n, 4 * n
    else:
        forward = 2 * n + 2 * trainable_params
        backward = 2 * n + 4 * trainable_params
    reference = 2 * n + 2 * reference_adapter_params + attention if with_reference_model else 0.0
    per_image = shape.vision_forward_flops_per_image * (3 if vision_trainable else 1)
    return FlopsPerToken(forward, backward, 3 * attention, reference, per_image)


def mfu(tokens_per_second: float, images_per_second: float, flops: FlopsPerToken, peak_tflops: float) -> float:
    """Model FLOPs utilisation of one GPU: achieved model FLOP/s over the dense bf16 peak."""
    achieved = tokens_per_second * flops.total + images_per_second * flops.per_image
    return achieved / (peak_tflops * 1e12)


@dataclass(frozen=True)
class MemoryEstimate:
    """A first-order estimate of peak GPU memory (GiB) of one training micro-batch, by component."""

    weights: float
    trainable_states: float
    checkpointed_activations: float
    layer_working_set: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.trainable_states + self.checkpointed_activations + self.layer_working_set + self.logits + self.overhead


GIB = 1024**3


def estimate_memory(
    shape: ModelShape,
    sequences: int,
    sequence_length: int,
    trainable_params: int,
    quantization_bit: int | None,
    intermediate_size: int,
    gradient_checkpointing: bool = True,
    reference_model: bool = False,
) -> MemoryEstimate:
    """Peak memory of one micro-batch of ``sequences`` x ``sequence_length`` tokens, to tell whether a
    recipe fits a 40 GB or 80 GB A100 before renting one. An estimate, not a measurement: ``medfactory
    bench`` on a GPU prints both, and ``docs/benchmarks.md`` keeps the two apart.

    - weights: bf16 (2 bytes) or 4-bit NF4 with double quantization (~0.52 bytes) for the linear layers;
      embeddings, output layer and norms stay bf16 (bitsandbytes does not quantize the output layer);
    - trainable weights: fp32 copy, fp32 gradient and two Adam moments (16 bytes each);
    - with gradient checkpointing, each layer's input (bf16) is kept; one layer is recomputed at a time
      (its working set: attention projections, MLP intermediates, FlashAttention with no T x T matrix);
      without it, every layer's working set is kept;
    - logits: bf16 output, its fp32 upcast for the loss and the fp32 gradient (12 bytes per vocabulary entry);
    - overhead: CUDA context and allocator slack, 1.5 GiB plus 10 %.
    """
    tokens = sequences * sequence_length
    quantized_linear = shape.language_linear_params + shape.vision_linear_params
    output_layer = shape.hidden_size * shape.vocab_size
    if quantization_bit == 4:
        weight_bytes = (quantized_linear - output_layer) * 0.52 + (shape.total_params - quantized_linear + output_layer) * 2
    elif quantization_bit == 8:
        weight_bytes = (quantized_linear - output_layer) * 1.0 + (shape.total_params - quantized_linear + output_layer) * 2
    else:
        weight_bytes = shape.total_params * 2
    if reference_model:
        weight_bytes *= 2
    layer = tokens * (8 * shape.hidden_size + 3 * intermediate_size) * 2  # q,k,v,o, norms, residuals; gate, up, act (bf16)
    checkpoints = shape.language_layers * tokens * shape.hidden_size * 2
    if not gradient_checkpointing:
        checkpoints, layer = shape.language_layers * layer, 0
    logits = tokens * shape.vocab_size * 12
    subtotal = weight_bytes + trainable_params * 16 + checkpoints + layer + logits
    return MemoryEstimate(
        weights=weight_bytes / GIB,
        trainable_states=trainable_params * 16 / GIB,
        checkpointed_activations=checkpoints / GIB,
        layer_working_set=layer / GIB,
        logits=logits / GIB,
        overhead=1.5 + 0.1 * subtotal / GIB,
    )
