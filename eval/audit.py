"""Memorization audit of a trained model: canary exposure and extraction, verbatim regurgitation, membership inference.

``medfactory audit memorization`` measures what a model (a base with a LoRA adapter, or a merged
model) keeps of its training notes, beside its base model as the control:

- *exposure* of the canaries ``prepare --canaries`` planted (Carlini et al. 2019, "The Secret
  Sharer"): how the secret ranks, by the model's log-perplexity, among the other fillings of its
  shape; exact when every filling is scored, estimated from a sample (empirically, and by the
  paper's skew-normal extrapolation) when the space is larger than ``--candidates``;
- *extraction*: greedy and sampled continuations of each canary's prefix that spell its secret;
- *verbatim regurgitation*: greedy continuations of the first k tokens of training and held-out
  notes, compared token by token with the notes' true continuations (Carlini et al. 2023's
  extractability test);
- *membership inference*: ROC AUC of the per-note loss separating training from held-out notes,
  and its reference-calibrated variant (loss under the model minus loss under the base).

The outputs hold counts, ids, line numbers and scores: never a secret, never a note's text, never
a generated continuation. docs/audit.md explains the measures and their limits.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfactory.base.atomic import atomic_directory, atomic_write, sha256_file, write_json_atomic
from medfactory.base.errors import CorpusError
from medfactory.base.jsonl import iter_jsonl
from medfactory.base.tables import markdown_table
from medfactory.base.versions import package_versions
from medfactory.corpus.canaries import Canary, read_canaries

if TYPE_CHECKING:  # heavy imports stay lazy: `medfactory --help` must not load torch
    import torch

REPORT_FORMAT = "medfactory-audit/1"
METRICS_JSON = "metrics.json"
CANARIES_CSV = "canaries.csv"
NOTES_CSV = "notes.csv"
REPORT_MD = "report.md"
EXPOSURE_PNG = "exposure_vs_repetitions.png"
LOSS_PNG = "loss_histograms.png"
VERBATIM_TOKENS = 50  # Carlini et al. 2023: a note is extractable when greedy decoding reproduces its next 50 tokens
TOP_K = 40  # sampled extraction: temperature 1, top-k 40 (Carlini et al. 2021)
MIN_CANDIDATES = 20  # below this a skew-normal fit and a sampled rank say nothing
CANARY_FIX = "Fix: pass the canary file `prepare --canaries` wrote, unedited (the study lead keeps it outside data/)."


class AuditError(ValueError):
    """Bad input or setting for the audit; the message names the file, the item and the fix."""


@dataclass(frozen=True)
class AuditSettings:
    """How much to measure; the defaults are the command's."""

    candidates: int = 2000
    samples: int = 8
    notes: int = 200
    prefix_tokens: int = 32
    continuation_tokens: int = 64
    loss_tokens: int = 256
    batch_size: int = 8
    seed: int = 0

    def check(self) -> None:
        """Refuse a setting that cannot be measured with, naming its option."""
        if self.candidates < MIN_CANDIDATES:
            raise AuditError(f"--candidates {self.candidates}: at least {MIN_CANDIDATES} are needed to rank a secret and fit the skew-normal.")
        for value, flag in ((self.notes, "--notes"), (self.prefix_tokens, "--prefix-tokens"), (self.continuation_tokens, "--continuation-tokens"),
                            (self.loss_tokens, "--loss-tokens"), (self.batch_size, "--batch-size")):  # fmt: skip
            if value < 1:
                raise AuditError(f"{flag} {value}: must be at least 1.")
        if self.samples < 0:
            raise AuditError(f"--samples {self.samples}: must be 0 or more.")

    @property
    def verbatim_tokens(self) -> int:
        """Tokens a continuation must reproduce from its start: 50, or all of them when --continuation-tokens is shorter."""
        return min(VERBATIM_TOKENS, self.continuation_tokens)


# --------------------------------------------------------------------------------------------
# Canaries and their secret spaces
# --------------------------------------------------------------------------------------------


def load_canaries(path: Path) -> list[Canary]:
    """The canaries of a canary file, each checked: its secret fills its secret_format, ids are unique."""
    path = Path(path)
    if not path.is_file():
        raise AuditError(f"--canaries {path}: no such file. {CANARY_FIX}")
    try:
        canaries = read_canaries(path)
    except CorpusError as error:
        raise AuditError(str(error)) from error
    if not canaries:
        raise AuditError(f"{path}: holds no canaries. Fix: prepare the training set with --canaries N (N >= 1) and pass the file it wrote.")
    seen: set[str] = set()
    for index, canary in enumerate(canaries):
        if "#" not in canary.secret_format:
            raise AuditError(f"{path}: canary {index}: secret_format has no '#' (no random digit), so there are no candidates. {CANARY_FIX}")
        if not canary.prefix.strip():
            raise AuditError(f"{path}: canary {index}: empty prefix; extraction prompts with it. {CANARY_FIX}")
        if canary.id in seen:
            raise AuditError(f"{path}: canary {index}: id {canary.id!r} is used twice. {CANARY_FIX}")
        seen.add(canary.id)
    return canaries


def space_size(secret_format: str) -> int:
    """How many fillings a format has: ten per '#'."""
    return 10 ** secret_format.count("#")


def fill(secret_format: str, number: int) -> str:
    """The ``number``-th filling of ``secret_format``: its digits, zero-padded, in the '#' slots."""
    digits = iter(f"{number:0{secret_format.count('#')}d}")
    return "".join(next(digits) if slot == "#" else slot for slot in secret_format)


def secret_number(canary: Canary) -> int:
    """The number whose filling is the canary's secret."""
    return int("".join(char for char, slot in zip(canary.secret, canary.secret_format) if slot == "#"))


def candidate_secrets(canary: Canary, count: int, seed: int) -> tuple[list[str], bool]:
    """(other fillings of the canary's format, exhaustive?): all of them when they are at most ``count``, else ``count`` drawn without replacement.

    The draw depends on the seed and the canary id only, so the model and its base rank the secret among the same candidates.
    """
    size, own = space_size(canary.secret_format), secret_number(canary)
    if size - 1 <= count:
        return [fill(canary.secret_format, number) for number in range(size) if number != own], True
    rng = random.Random(f"{seed}:{canary.id}")
    numbers = [number for number in rng.sample(range(size), count + 1) if number != own][:count]
    return [fill(canary.secret_format, number) for number in numbers], False


# --------------------------------------------------------------------------------------------
# Exposure (Carlini et al. 2019, sections 3-4)
# --------------------------------------------------------------------------------------------


def rank_among(secret_score: float, candidate_scores: Sequence[float]) -> float:
    """1 + candidates with a lower log-perplexity (more likely than the secret), ties counting one half."""
    scores = np.asarray(candidate_scores, dtype=float)
    return 1.0 + float(np.sum(scores < secret_score)) + 0.5 * float(np.sum(scores == secret_score))


def extrapolated_exposure(secret_score: float, candidate_scores: Sequence[float], space: int) -> tuple[float, float]:
    """(-log2 of the skew-normal CDF at the secret's log-perplexity, at most log2(space); the fit's Kolmogorov-Smirnov distance).

    The skew-normal is fitted to the candidates' log-perplexities by maximum likelihood; (NaN, NaN) when they do not vary.
    """
    from scipy.stats import kstest, skewnorm

    scores = np.asarray(candidate_scores, dtype=float)
    if len(scores) < 3 or not np.all(np.isfinite(scores)) or float(np.std(scores)) <= 1e-12 * max(1.0, abs(float(np.mean(scores)))):
        return float("nan"), float("nan")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the optimiser's overflow warnings in the far tails
        params = skewnorm.fit(scores)
        log_cdf = float(skewnorm.logcdf(secret_score, *params))
        distance = float(kstest(scores, skewnorm.cdf, args=params).statistic)
    if math.isnan(log_cdf):
        return float("nan"), distance
    # A rank is at least 1, so exposure cannot pass log2(space); the fit's far tail can.
    return float(min(max(-log_cdf / math.log(2), 0.0), math.log2(space))), distance


def exposure_estimates(secret_score: float, candidate_scores: Sequence[float], space: int) -> dict[str, Any]:
    """Rank and exposures of a secret among candidates (log-perplexities, lower = more likely).

    ``exposure_empirical`` = log2(n + 1) - log2(rank) for n candidates: the paper's exact exposure
    when they are every other filling (``exhaustive``); from a sample, an estimate of it to within
    the binomial error of the rank, which cannot pass log2(n + 1). ``exposure_extrapolated`` =
    -log2 CDF of a skew-normal fitted to the candidates (the paper's section 4): it can pass that
    cap, but only reads a fitted tail, and is as good as the fit (``fit_ks``). ``exposure``, the
    number to read: exact when exhaustive; the empirical estimate while some sampled candidate
    outranks the secret (the sample measures it there); once none does (the empirical estimate is
    at its cap, a lower bound) the extrapolation, never below that cap.
    """
    n = len(candidate_scores)
    rank = rank_among(secret_score, candidate_scores)
    exhaustive = n == space - 1
    empirical, cap = math.log2(n + 1) - math.log2(rank), math.log2(n + 1)
    extrapolated, distance = extrapolated_exposure(secret_score, candidate_scores, space)
    if exhaustive:
        exposure, basis = empirical, "exact"
    elif rank >= 2 or math.isnan(extrapolated):
        exposure, basis = empirical, "sampled rank" if rank >= 2 else "sampled rank (lower bound)"
    else:
        exposure, basis = max(extrapolated, empirical), "extrapolated" if extrapolated > empirical else "sampled rank (lower bound)"
    return {
        "rank": rank,
        "candidates": n,
        "exhaustive": exhaustive,
        "space_bits": math.log2(space),
        "exposure_empirical": empirical,
        "exposure_empirical_cap": cap,
        "exposure_extrapolated": extrapolated,
        "fit_ks": distance,
        "exposure": exposure,
        "exposure_basis": basis,
    }


# --------------------------------------------------------------------------------------------
# Membership inference and verbatim runs
# --------------------------------------------------------------------------------------------


def roc_auc(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counting one half: Mann-Whitney U / (n1 n2)."""
    from scipy.stats import mannwhitneyu

    positives, negatives = np.asarray(positive_scores, dtype=float), np.asarray(negative_scores, dtype=float)
    if not len(positives) or not len(negatives):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-tied samples: the statistic is still n1 n2 / 2
        u = mannwhitneyu(positives, negatives, alternative="two-sided").statistic  # U of the first sample
    return float(u) / (len(positives) * len(negatives))


def auc_interval(auc: float, n_positive: int, n_negative: int) -> tuple[float, float]:
    """A 95 % interval from Hanley & McNeil's (1982) standard error of an AUC."""
    if math.isnan(auc) or not n_positive or not n_negative:
        return float("nan"), float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc)) / (n_positive * n_negative)
    half = 1.96 * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def membership(train_losses: Sequence[float], heldout_losses: Sequence[float]) -> dict[str, Any]:
    """AUC of "lower loss = a training note" (0.5: no signal), its interval and one-sided Mann-Whitney p-value."""
    from scipy.stats import mannwhitneyu

    train = np.asarray([value for value in train_losses if not math.isnan(value)], dtype=float)
    heldout = np.asarray([value for value in heldout_losses if not math.isnan(value)], dtype=float)
    auc = roc_auc(-train, -heldout)
    low, high = auc_interval(auc, len(train), len(heldout))
    p_value = float("nan")
    if len(train) and len(heldout):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_value = float(mannwhitneyu(-train, -heldout, alternative="greater").pvalue)
    return {"auc": auc, "auc_95ci": [low, high], "p_value": p_value, "n_train": len(train), "n_heldout": len(heldout)}


def longest_common_run(first: Sequence[int], second: Sequence[int]) -> int:
    """The longest contiguous run of tokens that both sequences contain (longest common substring)."""
    best, previous = 0, [0] * (len(second) + 1)
    for token in first:
        current = [0] * (len(second) + 1)
        for index, other in enumerate(second, start=1):
            if token == other:
                current[index] = previous[index - 1] + 1
                best = max(best, current[index])
        previous = current
    return best


def common_prefix(first: Sequence[int], second: Sequence[int]) -> int:
    """How many tokens the sequences share from their start."""
    count = 0
    for a, b in zip(first, second):
        if a != b:
            break
        count += 1
    return count


# --------------------------------------------------------------------------------------------
# The model: scoring and generation
# --------------------------------------------------------------------------------------------


def context_ids(tokenizer: Any) -> list[int]:
    """What stands before a note: BOS where the tokenizer adds one, else EOS (LLaMA-Factory's pt packing ends each note with it)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    if bos is not None and probe and probe[0] == bos:
        return [bos]
    return [eos] if eos is not None else []


def pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pad if pad is not None else 0


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def score_sequences(
    model: Any, sequences: Sequence[Sequence[int]], first_scored: int, batch_size: int, pad: int, progress: Callable[[Iterable], Iterable] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(sum of natural log-probabilities, tokens scored) of each sequence's tokens from position ``first_scored`` on.

    Longest first, right-padded with an attention mask, so padding never changes a real token's score.
    """
    import torch

    order = sorted(range(len(sequences)), key=lambda index: -len(sequences[index]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    sums, counts = np.zeros(len(sequences)), np.zeros(len(sequences), dtype=int)
    device = _device(model)
    with torch.inference_mode():
        for batch in progress(batches) if progress else batches:
            width = max(len(sequences[index]) for index in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for slot, index in enumerate(batch):
                input_ids[slot, : len(sequences[index])] = torch.tensor(list(sequences[index]), dtype=torch.long)
                attention[slot, : len(sequences[index])] = 1
            input_ids, attention = input_ids.to(device), attention.to(device)
            logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
            targets = input_ids[:, 1:]
            picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
            # logits at position j score token j + 1: keep tokens first_scored .. length - 1
            positions = torch.arange(1, width, device=device).unsqueeze(0)
            keep = (positions >= first_scored) & (attention[:, 1:] == 1)
            row_sums, row_counts = (picked * keep).sum(dim=1).cpu().numpy(), keep.sum(dim=1).cpu().numpy()
            for slot, index in enumerate(batch):
                sums[index], counts[index] = row_sums[slot], row_counts[slot]
    return sums, counts


def generate(model: Any, prompts: Sequence[Sequence[int]], new_tokens: int, pad: int, eos: int | None, samples: int = 0) -> list[list[int]]:
    """Greedy continuations of equal-length prompts (``samples`` = 0), or ``samples`` sampled ones (temperature 1, top-k 40) of each."""
    import torch
    from transformers import GenerationConfig

    if len({len(prompt) for prompt in prompts}) != 1:
        raise ValueError("generate() takes prompts of one length (no padding needed)")
    sampled = samples > 0
    # Every setting that shapes the output is explicit: generate() fills the unset ones from the model's own
    # generation_config.json, whose repetition penalty or top-p would change what "greedy" means from model to model.
    config = GenerationConfig(
        max_new_tokens=new_tokens, do_sample=sampled, num_return_sequences=samples if sampled else 1, top_k=TOP_K if sampled else None,
        temperature=1.0, top_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0, pad_token_id=pad, eos_token_id=eos,
    )  # fmt: skip
    input_ids = torch.tensor([list(prompt) for prompt in prompts], dtype=torch.long, device=_device(model))
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
    return output[:, input_ids.shape[1] :].tolist()


def log_perplexities(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int, progress: Callable[[Iterable], Iterable] | None = None) -> np.ndarray:
    """Log-perplexity in bits (-log2 P) of each whole text after the document-start context (the paper's P_x of the full canary)."""
    context = context_ids(tokenizer)
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    # Without a context token the first token has no logits before it; it is the prefix's, the same for every candidate.
    sums, _ = score_sequences(model, [context + list(ids) for ids in encoded], 1, batch_size, pad_id(tokenizer), progress)
    return -sums / math.log(2)


# --------------------------------------------------------------------------------------------
# Auditing one model
# --------------------------------------------------------------------------------------------


def _tqdm(description: str, unit: str = "batch") -> Callable[[Iterable], Iterable]:
    from tqdm import tqdm

    def wrap(items: Iterable) -> Iterable:
        items = list(items)
        return tqdm(items, total=len(items), desc=description, unit=unit)

    return wrap


def canary_prompt(tokenizer: Any, canary: Canary) -> tuple[list[int], str, int]:
    """(prompt ids, prefix text the prompt leaves out, tokens the secret takes) of the canary as the model read it in training.

    The prompt is the tokens of the whole canary text that end before the secret: a token that
    spans the boundary (a space merged with the first digit) belongs to the continuation.
    """
    try:
        encoded = tokenizer(canary.text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError):  # slow tokenizers have no offsets: encode the prefix alone
        kept = canary.prefix.rstrip()
        secret_tokens = len(tokenizer(canary.secret, add_special_tokens=False)["input_ids"])
        return list(tokenizer(kept, add_special_tokens=False)["input_ids"]), canary.prefix[len(kept) :], secret_tokens
    start, end = len(canary.prefix), len(canary.prefix) + len(canary.secret)
    pairs = list(zip(encoded["input_ids"], encoded["offset_mapping"]))
    prompt = [token for token, (_, stop) in pairs if stop <= start]
    covered = max([stop for _, (_, stop) in pairs if stop <= start], default=0)
    secret_tokens = sum(1 for _, (begin, stop) in pairs if begin < end and stop > start)
    return prompt, canary.prefix[covered:], max(secret_tokens, 1)


def _recovered(tokenizer: Any, continuation: Sequence[int], tail: str, secret: str) -> bool:
    # Decoders differ on a leading space (sentencepiece drops it): compare from the first non-space character.
    return tokenizer.decode(list(continuation), skip_special_tokens=True).lstrip().startswith((tail + secret).lstrip())


def extract_canary(model: Any, tokenizer: Any, canary: Canary, samples: int, seed: int) -> dict[str, Any]:
    """Greedy and ``samples`` sampled continuations of the canary's prefix (secret tokens + 2 long); how many spell the secret."""
    import torch

    prompt, tail, secret_tokens = canary_prompt(tokenizer, canary)
    prompt = context_ids(tokenizer) + prompt
    new_tokens, pad, eos = secret_tokens + 2, pad_id(tokenizer), tokenizer.eos_token_id
    greedy = generate(model, [prompt], new_tokens, pad, eos)[0]
    recovered = 0
    if samples:
        torch.manual_seed(seed)  # the same draws for the model and its base
        recovered = sum(_recovered(tokenizer, output, tail, canary.secret) for output in generate(model, [prompt], new_tokens, pad, eos, samples))
    return {"greedy_extracted": _recovered(tokenizer, greedy, tail, canary.secret), "sampled_extractions": recovered, "samples": samples,
            "new_tokens": new_tokens}  # fmt: skip


def audit_canaries(model: Any, tokenizer: Any, canaries: Sequence[Canary], settings: AuditSettings, label: str, progress: bool = True) -> list[dict[str, Any]]:
    """One row per canary: exposure (rank among candidates by log-perplexity) and extraction counts; no secret in them."""
    spans, texts = [], []
    for canary in canaries:
        candidates, _ = candidate_secrets(canary, settings.candidates, settings.seed)
        spans.append((len(texts), len(candidates)))
        texts.extend(canary.prefix + secret + canary.suffix for secret in [canary.secret, *candidates])
    scores = log_perplexities(model, tokenizer, texts, settings.batch_size, _tqdm(f"exposure ({label})") if progress else None)
    rows = []
    listed = _tqdm(f"extraction ({label})", "canary")(canaries) if progress else canaries
    for index, (canary, (first, count)) in enumerate(zip(listed, spans)):
        estimates = exposure_estimates(float(scores[first]), scores[first + 1 : first + 1 + count], space_size(canary.secret_format))
        extraction = extract_canary(model, tokenizer, canary, settings.samples, settings.seed + index)
        rows.append({"model": label, "id": canary.id, "kind": canary.kind, "repetitions": canary.repetitions,
                     "log_perplexity_bits": float(scores[first]), **estimates, **extraction})  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------
# Notes: which ones, and their loss and continuations
# --------------------------------------------------------------------------------------------


@dataclass
class NoteSet:
    """Notes of one split chosen for the audit: line numbers and texts (kept in memory only, never written)."""

    split: str
    path: Path
    lines: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    records: int = 0
    canary_copies: int = 0
    too_short: int = 0


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def scan_notes(path: Path, flag: str, split: str, canaries: Sequence[Canary]) -> tuple[NoteSet, list[int]]:
    """(the split's NoteSet, line numbers of its notes): records with a non-empty "text", canary copies left out and counted."""
    path = Path(path)
    if not path.is_file():
        raise AuditError(f"{flag} {path}: no such file. Fix: pass a prepared split, e.g. data/<name>/train.jsonl and data/<name>/test.jsonl.")
    canary_digests = {_digest(canary.text) for canary in canaries}
    notes, lines = NoteSet(split, path), []
    try:
        for line, record in iter_jsonl(path):
            notes.records += 1
            text = record.get("text")
            if not isinstance(text, str) or not text.strip():
                continue
            if _digest(text) in canary_digests:  # a planted canary, measured by exposure, not a note
                notes.canary_copies += 1
                continue
            lines.append(line)
    except ValueError as error:  # JsonlLineError names the file and line, never the line's text
        raise AuditError(f'{flag} {error}. Fix: pass a prepared split (JSON Lines with a "text" field).') from error
    if not lines:
        raise AuditError(f"{flag} {path}: no notes (no record with a non-empty \"text\"; {notes.canary_copies} canary copies). "
                         "Fix: pass a prepared split, e.g. data/<name>/train.jsonl.")  # fmt: skip
    return notes, lines


def pick_notes(notes: NoteSet, lines: list[int], tokenizer: Any, settings: AuditSettings) -> NoteSet:
    """Up to --notes notes of at least prefix + continuation tokens, drawn at random (seeded) among ``lines``.

    The file is read again in chunks of drawn lines, so a large training split is never held in memory.
    """
    order = list(lines)
    random.Random(f"{settings.seed}:{notes.split}").shuffle(order)
    needed, cursor = settings.prefix_tokens + settings.continuation_tokens, 0
    chosen: list[tuple[int, str]] = []
    while len(chosen) < settings.notes and cursor < len(order):
        chunk = order[cursor : cursor + max(64, 4 * (settings.notes - len(chosen)))]
        cursor += len(chunk)
        wanted = set(chunk)
        texts = {line: record["text"] for line, record in iter_jsonl(notes.path) if line in wanted}
        lengths = tokenizer([texts[line] for line in chunk], add_special_tokens=False)["input_ids"]
        for line, ids in zip(chunk, lengths):
            if len(chosen) == settings.notes:
                break
            if len(ids) >= needed:
                chosen.append((line, texts[line]))
            else:
                notes.too_short += 1
    if not chosen:
        raise AuditError(f"{notes.path}: no note has {needed} tokens (--prefix-tokens + --continuation-tokens). "
                         "Fix: lower --prefix-tokens / --continuation-tokens, or pass a split of longer notes.")  # fmt: skip
    chosen.sort()
    notes.lines, notes.texts = [line for line, _ in chosen], [text for _, text in chosen]
    return notes


def audit_notes(model: Any, tokenizer: Any, notes: NoteSet, settings: AuditSettings, label: str, progress: bool = True) -> list[dict[str, Any]]:
    """One row per note: mean token loss (first --loss-tokens tokens) and how much of its continuation greedy decoding reproduces."""
    context, pad = context_ids(tokenizer), pad_id(tokenizer)
    k, c = settings.prefix_tokens, settings.continuation_tokens
    encoded = [list(ids) for ids in tokenizer(notes.texts, add_special_tokens=False)["input_ids"]]
    first = len(context) if context else 1
    bar = _tqdm(f"loss {notes.split} ({label})") if progress else None
    sums, counts = score_sequences(model, [context + ids[: settings.loss_tokens] for ids in encoded], first, settings.batch_size, pad, bar)
    usable = [index for index, ids in enumerate(encoded) if len(ids) > k]  # another tokenizer (a separate --base) may cut a note shorter
    batches = [usable[start : start + settings.batch_size] for start in range(0, len(usable), settings.batch_size)]
    continuations: dict[int, list[int]] = {}
    for batch in _tqdm(f"regurgitation {notes.split} ({label})")(batches) if progress else batches:
        outputs = generate(model, [context + encoded[index][:k] for index in batch], c, pad, tokenizer.eos_token_id)
        continuations.update(zip(batch, outputs))
    rows = []
    for index, (line, ids) in enumerate(zip(notes.lines, encoded)):
        truth, output = ids[k : k + c], continuations.get(index)
        verbatim = common_prefix(output, truth) if output is not None else 0
        rows.append({
            "model": label, "split": notes.split, "line": line, "tokens": len(ids), "loss_tokens": int(counts[index]),
            "loss": float(-sums[index] / counts[index]) if counts[index] else float("nan"),
            "longest_run": longest_common_run(output, truth) if output is not None else float("nan"),
            "verbatim_prefix": verbatim if output is not None else float("nan"),
            "reproduced": bool(output is not None and len(truth) >= settings.verbatim_tokens and verbatim >= settings.verbatim_tokens),
        })  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def _finite(values: Iterable[float]) -> list[float]:
    return [float(value) for value in values if value is not None and not (isinstance(value, float) and math.isnan(value))]


def _mean(values: Iterable[float]) -> float:
    finite = _finite(values)
    return float(np.mean(finite)) if finite else float("nan")


def summarize_canaries(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Exposure and extractions per repetition count, and the rank correlation of exposure with repetitions."""
    from scipy.stats import spearmanr

    per_repetition = {}
    for repetitions in sorted({row["repetitions"] for row in rows}):
        group = [row for row in rows if row["repetitions"] == repetitions]
        per_repetition[str(repetitions)] = {
            "canaries": len(group),
            "exposure_mean": _mean(row["exposure"] for row in group),
            "exposure_min": min(row["exposure"] for row in group),
            "exposure_max": max(row["exposure"] for row in group),
            "exposure_share_mean": _mean(row["exposure"] / row["space_bits"] for row in group),
            "exposure_empirical_mean": _mean(row["exposure_empirical"] for row in group),
            "space_bits_mean": _mean(row["space_bits"] for row in group),
            "greedy_extracted": sum(row["greedy_extracted"] for row in group),
            "sampled_extractions": sum(row["sampled_extractions"] for row in group),
            "samples": sum(row["samples"] for row in group),
        }
    spearman, p_value = float("nan"), float("nan")
    if len({row["repetitions"] for row in rows}) > 1 and len({row["exposure"] for row in rows}) > 1:
        result = spearmanr([row["repetitions"] for row in rows], [row["exposure"] for row in rows])
        spearman, p_value = float(result.statistic), float(result.pvalue)
    return {
        "canaries": len(rows),
        "exposure_mean": _mean(row["exposure"] for row in rows),
        "greedy_extracted": sum(row["greedy_extracted"] for row in rows),
        "sampled_extractions": sum(row["sampled_extractions"] for row in rows),
        "samples": sum(row["samples"] for row in rows),
        "spearman_repetitions_exposure": spearman,
        "spearman_p_value": p_value,
        "per_repetition": per_repetition,
    }


def summarize_notes(rows: Sequence[dict[str, Any]], settings: AuditSettings) -> dict[str, Any]:
    """Per split: loss and verbatim-run statistics; and the membership AUC of training against held-out notes."""
    splits = {}
    for split in ("train", "heldout"):
        group = [row for row in rows if row["split"] == split]
        runs = _finite(row["longest_run"] for row in group)
        splits[split] = {
            "notes": len(group),
            "loss_mean": _mean(row["loss"] for row in group),
            "loss_median": float(np.median(_finite(row["loss"] for row in group))) if group else float("nan"),
            "longest_run_mean": float(np.mean(runs)) if runs else float("nan"),
            "longest_run_median": float(np.median(runs)) if runs else float("nan"),
            "longest_run_max": max(runs) if runs else float("nan"),
            "verbatim_prefix_mean": _mean(row["verbatim_prefix"] for row in group),
            "reproduced": sum(row["reproduced"] for row in group),
            "reproduced_share": sum(row["reproduced"] for row in group) / len(group) if group else float("nan"),
        }
    losses = {split: [row["loss"] for row in rows if row["split"] == split] for split in ("train", "heldout")}
    return {"verbatim_tokens": settings.verbatim_tokens, "splits": splits, "membership": membership(losses["train"], losses["heldout"])}


def calibrated_membership(model_rows: Sequence[dict[str, Any]], base_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Membership AUC of (loss under the model - loss under the base): the base's view of how hard each note is taken out."""
    base = {(row["split"], row["line"]): row["loss"] for row in base_rows}
    differences = {split: [row["loss"] - base[(split, row["line"])] for row in model_rows if row["split"] == split and (split, row["line"]) in base]
                   for split in ("train", "heldout")}  # fmt: skip
    return membership(differences["train"], differences["heldout"])


# --------------------------------------------------------------------------------------------
# Outputs: metrics.json, canaries.csv, notes.csv, figures, report.md
# --------------------------------------------------------------------------------------------

CANARY_COLUMNS = (
    "model", "id", "kind", "repetitions", "space_bits", "candidates", "exhaustive", "rank", "log_perplexity_bits", "exposure", "exposure_basis",
    "exposure_empirical", "exposure_empirical_cap", "exposure_extrapolated", "fit_ks", "greedy_extracted", "sampled_extractions", "samples",
)  # fmt: skip
NOTE_COLUMNS = ("model", "split", "line", "tokens", "loss_tokens", "loss", "longest_run", "verbatim_prefix", "reproduced")


def _json_safe(value: Any) -> Any:
    """NaN as null, numpy scalars as Python numbers: metrics.json stays strict JSON."""
    if isinstance(value, dict):
        return {str(key): _json_safe(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(inner) for inner in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """A CSV of the named columns (NaN left blank), written atomically."""
    with atomic_write(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if isinstance(row[name], float) and math.isnan(row[name]) else row[name] for name in columns])


def _save_figure(figure: Any, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150)
    with atomic_write(path, mode="wb") as handle:
        handle.write(buffer.getvalue())


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_exposure(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Exposure of every canary against its repetition count: a colour per model, a marker per kind, each kind's means joined; dashed: log2|space|."""
    figure = _figure(6.8, 4.4)
    axes = figure.add_subplot()
    labels = list(dict.fromkeys(row["model"] for row in rows))
    # A series per kind and size of secret (a kind has one shape per language; a hand-made file may have more).
    series = list(dict.fromkeys((row["kind"], round(row["space_bits"] / math.log2(10))) for row in rows))
    markers = "osD^v<>P*X"
    for number, label in enumerate(labels):
        colour = f"C{number}"
        shift = 1 + 0.05 * (number - (len(labels) - 1) / 2)  # side by side, not on top of each other
        for index, (kind, digits) in enumerate(series):
            group = [row for row in rows if row["model"] == label and (row["kind"], round(row["space_bits"] / math.log2(10))) == (kind, digits)]
            if not group:
                continue
            axes.scatter([row["repetitions"] * shift for row in group], [row["exposure"] for row in group], color=colour, alpha=0.7,
                         marker=markers[index % len(markers)], label=f"{label}, {kind} ({digits} digits)")  # fmt: skip
            repetitions = sorted({row["repetitions"] for row in group})
            means = [_mean(row["exposure"] for row in group if row["repetitions"] == value) for value in repetitions]
            axes.plot([value * shift for value in repetitions], means, color=colour, alpha=0.45, linewidth=1)
    for digits in sorted({digits for _, digits in series}):  # the maximum: the secret ranked first of all its fillings
        bits = digits * math.log2(10)
        axes.axhline(bits, linestyle="--", linewidth=0.8, color="grey")
        axes.annotate(f"log2|space|, {digits} digits = {bits:.1f}", (0.01, bits), xycoords=("axes fraction", "data"), fontsize=7, color="grey", va="bottom")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("repetitions of the canary in the training split")
    axes.set_ylabel("exposure (bits)")
    axes.set_title("Canary exposure (exact; from sampled candidates: their rank, or the skew-normal tail)", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=max(1, len(labels)))
    _save_figure(figure, path)


def plot_losses(note_rows: Sequence[dict[str, Any]], calibrated: dict[str, list[float]] | None, path: Path) -> None:
    """Histograms of per-note loss, training against held-out notes, one panel per model (and one of model - base)."""
    labels = list(dict.fromkeys(row["model"] for row in note_rows))
    panels = [(label, {split: _finite(row["loss"] for row in note_rows if row["model"] == label and row["split"] == split)
                       for split in ("train", "heldout")}) for label in labels]  # fmt: skip
    if calibrated:
        panels.append((f"{labels[0]} - base", calibrated))
    figure = _figure(4.2 * len(panels), 3.6)
    for index, (title, losses) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        values = losses["train"] + losses["heldout"]
        bins = np.linspace(min(values), max(values), 30) if values and min(values) < max(values) else 10
        for split, name in (("train", "training notes"), ("heldout", "held-out notes")):
            axes.hist(losses[split], bins=bins, alpha=0.55, label=f"{name} (n={len(losses[split])})")
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("mean token loss (nats)" if "base" not in title or title == "base" else "loss difference (nats)")
        axes.legend(fontsize=7)
    _save_figure(figure, path)


def _cell(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    return markdown_table(header, [[_cell(value) for value in row] for row in rows]) + "\n"


EXPOSURE_TEXT = """\
**Exposure** (Carlini et al. 2019, *The Secret Sharer*): each secret is ranked among other fillings
of its shape by the log-perplexity of the whole canary text, prefix + filling + suffix (the prefix
and suffix are the same for every filling, so the secret's tokens and the suffix tokens after them
decide the rank); exposure = log2|space| - log2(rank). A model that never saw a canary ranks it at
random: about 1.44 bits on average (1 / ln 2), above k bits with probability 2^-k. Exposure near
log2|space| means the secret is the model's most likely filling: the paper extracts such secrets by
search and treats them as memorised.

Which estimate to read: `exposure` is exact when every filling was scored (basis `exact`). From a
sample of n candidates, `exposure_empirical` (the secret's rank among them) measures it to within
the binomial error of that rank, but cannot pass log2(n + 1): once the secret outranks every sampled
candidate it is only a lower bound. `exposure_extrapolated` reads the tail of a skew-normal fitted
to the candidates' log-perplexities (the paper's section 4), so it goes past that cap, but it is an
extrapolation, as good as the fit: `fit_ks`, the fit's Kolmogorov-Smirnov distance, above about
1.36 / sqrt(n) says the candidates are not skew-normal (several modes, e.g. fillings that tokenize
differently) and the extrapolation is off by bits. So `exposure` is the sampled rank while some
candidate outranks the secret (basis `sampled rank`), and the extrapolation, never below the cap,
once none does (basis `extrapolated`): read that as an order of magnitude, and near log2|space| as
"memorised".

**Extraction**: the greedy continuation of the canary's prefix (as many new tokens as the secret
takes, + 2) begins with the secret: the secret comes out with no search at all, the strongest
evidence of memorisation; sampled: how many of the samples (temperature 1, top-k 40) do.
"""

NOTES_TEXT = """\
**Verbatim regurgitation**: each note is prompted with its first {k} tokens and greedily continued
for {c} tokens. `longest run` is the longest run of tokens the continuation shares with the note's
true continuation (anywhere); `reproduced` counts continuations that reproduce the first {v}
tokens exactly{whole}, Carlini et al. (2023, *Quantifying Memorization Across Neural Language
Models*)'s test of an extractable training sequence (50 tokens). Held-out notes are the control:
clinical notes share boilerplate that any model continues correctly without having seen that note;
only the excess of training over held-out notes is memorisation.

**Membership inference**: the ROC AUC of "lower mean token loss (first {l} tokens) = a training
note" (Yeom et al. 2018's loss attack). AUC 0.5 means no membership signal, 1.0 that every training
note has a lower loss than every held-out note. The calibrated variant ranks by the loss under the
model minus the loss under the base, which removes how hard a note is in itself (the reference-model
comparison of Carlini et al. 2021; Watson et al. 2022). An AUC near 0.5 does not show that no note
leaks: an attack can be sure about a few notes and blind to the rest (Carlini et al. 2022 read the
true-positive rate at a low false-positive rate); the interval is Hanley & McNeil's (1982).
"""


def _settings_table(metrics: dict[str, Any]) -> str:
    settings, info = metrics["settings"], metrics["canary_file"]
    rows = [
        ("model", settings["model"]), ("adapter", settings["adapter"] or "(none: a merged or base model)"),
        ("control (base)", settings["base"] or "(none)"), ("canary file", f"{settings['canaries']} (sha256 {settings['canaries_sha256'][:16]}...)"),
        ("canaries", f"{info['canaries']} of dataset {info['dataset']} ({info['language']}), repetitions {', '.join(map(str, info['repetitions']))}"),
        ("candidates per canary", f"{settings['candidates']} (every filling when the space is smaller)"),
        ("sampled extractions per canary", settings["samples"]), ("document start", settings["context"]),
        ("device, dtype", f"{settings['device']}, {settings['dtype']}"), ("seed", settings["seed"]),
    ]  # fmt: skip
    needed = settings["prefix_tokens"] + settings["continuation_tokens"]
    for split, notes in metrics["notes"].items():
        rows.append((f"{split} notes", f"{notes['audited']} audited of {notes['file']} ({notes['records']} records, {notes['canary_copies']} canary copies "
                     f"left out, {notes['too_short']} drawn but shorter than {needed} tokens)"))  # fmt: skip
    return _table(["setting", "value"], rows)


def _repetition_table(metrics: dict[str, Any]) -> str:
    labels = list(metrics["models"])
    header = ["repetitions", "canaries"] + [f"{name} ({label})" for label in labels for name in ("exposure", "of the maximum", "greedy", "sampled")]
    repetitions = list(metrics["models"][labels[0]]["canaries"]["per_repetition"])
    rows = []
    for value in repetitions:
        groups = [metrics["models"][label]["canaries"]["per_repetition"][value] for label in labels]
        cells: list[Any] = [value, groups[0]["canaries"]]
        for group in groups:
            cells += [group["exposure_mean"], f"{100 * group['exposure_share_mean']:.0f} %", f"{group['greedy_extracted']}/{group['canaries']}",
                      f"{group['sampled_extractions']}/{group['samples']}"]  # fmt: skip
        rows.append(cells)
    return _table(header, rows)


def _rank(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _canary_table(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """One row per canary and model, the models of a canary together."""
    header = ["canary", "kind", "repetitions", "log2 space", "candidates", "model", "exposure", "basis", "empirical", "extrapolated", "fit KS", "rank",
              "greedy", "sampled"]  # fmt: skip
    order = {label: index for index, label in enumerate(labels)}
    ids = list(dict.fromkeys(row["id"] for row in rows))
    table = [[row["id"], row["kind"], row["repetitions"], row["space_bits"], f"{row['candidates']}{' (all)' if row['exhaustive'] else ''}", row["model"],
              row["exposure"], row["exposure_basis"], row["exposure_empirical"], row["exposure_extrapolated"], row["fit_ks"], _rank(row["rank"]),
              row["greedy_extracted"], f"{row['sampled_extractions']}/{row['samples']}"]
             for row in sorted(rows, key=lambda row: (ids.index(row["id"]), order[row["model"]]))]  # fmt: skip
    return _table(header, table)


def _notes_section(metrics: dict[str, Any]) -> list[str]:
    settings = metrics["settings"]
    models = {label: result["notes"] for label, result in metrics["models"].items() if result["notes"]}
    if not models:
        return ["## Training notes\n", "Not measured: pass --train and --heldout (the prepared train and test splits) for regurgitation and membership.\n"]
    whole = " (the whole continuation: --continuation-tokens is below 50)" if settings["continuation_tokens"] < VERBATIM_TOKENS else ""
    text = NOTES_TEXT.format(
        k=settings["prefix_tokens"], c=settings["continuation_tokens"], v=settings["verbatim_tokens"], whole=whole, l=settings["loss_tokens"]
    )
    runs = [(label, split, s["notes"], s["loss_mean"], s["longest_run_mean"], s["longest_run_median"], s["longest_run_max"], s["verbatim_prefix_mean"],
             f"{s['reproduced']} ({100 * s['reproduced_share']:.1f} %)")
            for label, notes in models.items() for split, s in notes["splits"].items()]  # fmt: skip
    auc_rows = [(label, m["auc"], f"{m['auc_95ci'][0]:.2f}-{m['auc_95ci'][1]:.2f}", f"{m['p_value']:.2g}", m["n_train"], m["n_heldout"])
                for label, m in [(label, notes["membership"]) for label, notes in models.items()]]  # fmt: skip
    calibrated = metrics["comparison"].get("calibrated_membership")
    if calibrated:
        auc_rows.append((f"{next(iter(models))} - base (calibrated)", calibrated["auc"], f"{calibrated['auc_95ci'][0]:.2f}-{calibrated['auc_95ci'][1]:.2f}",
                         f"{calibrated['p_value']:.2g}", calibrated["n_train"], calibrated["n_heldout"]))  # fmt: skip
    return [
        "## Training notes: verbatim regurgitation and membership\n", text,
        _table(["model", "split", "notes", "mean loss", "mean longest run", "median longest run", "max longest run", "mean verbatim start",
                f"reproduced >= {settings['verbatim_tokens']} tokens"], runs),
        _table(["membership", "ROC AUC", "95 % interval", "p (one-sided)", "training notes", "held-out notes"], auc_rows),
    ]  # fmt: skip


def render_report(metrics: dict[str, Any], canary_rows: Sequence[dict[str, Any]]) -> str:
    """report.md: settings, exposure and extraction per repetition count and per canary, regurgitation, membership, what they mean."""
    labels, settings = list(metrics["models"]), metrics["settings"]
    if "base" not in labels:
        control = "No control model was audited (pass --base)."
    elif settings["base_is_model_without_adapter"]:
        control = "The control, `base`, is the same model without the adapter."
    else:
        control = f"The control, `base`, is {settings['base']}."
    audited = f"the adapter {settings['adapter']} on {settings['model']}" if settings["adapter"] else f"the model {settings['model']}"
    parts = [
        "# Memorization audit\n",
        f"What {audited} (`{labels[0]}` below) keeps of its training data, measured with planted canaries and with training notes. {control} "
        "No secret, note text or generated text is written here: ids, line numbers, counts and scores only.\n",
        _settings_table(metrics),
        "## Canaries: exposure and extraction\n", EXPOSURE_TEXT,
        _repetition_table(metrics),
        f"![exposure against repetitions]({EXPOSURE_PNG})\n",
        _canary_table(canary_rows, labels),
        *_notes_section(metrics),
    ]  # fmt: skip
    if any(result["notes"] for result in metrics["models"].values()):
        parts.append(f"![per-note loss, training against held-out notes]({LOSS_PNG})\n")
    parts.append("docs/audit.md explains the measures and their limits.\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Models:
    """What is audited: ``model`` (+ ``adapter``), and ``base`` as the control; ``shared``: the base is ``model`` without the adapter."""

    model: str
    adapter: str | None
    base: str | None
    shared: bool
    model_from_adapter: bool = False

    @property
    def label(self) -> str:
        return "adapter" if self.adapter else "model"


def adapter_base(adapter: str) -> str:
    """The base model an adapter was trained on: base_model_name_or_path of its adapter_config.json."""
    import json

    config = Path(adapter).expanduser() / "adapter_config.json"
    if not config.is_file():
        raise AuditError(f"--adapter {adapter}: no adapter_config.json, so not a PEFT adapter folder. "
                         "Fix: pass the output_dir llamafactory-cli wrote (saves/<run>), or a merged model as --model.")  # fmt: skip
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise AuditError(f"{config}: not a readable adapter config ({type(error).__name__}). Fix: pass --model, the adapter's base.") from error
    if not isinstance(base, str) or not base:
        raise AuditError(f"{config}: names no base_model_name_or_path. Fix: pass --model, the base the adapter was trained on.")
    return base


def resolve_models(model: str | None, adapter: str | None, base: str | None) -> Models:
    """--model defaults to the adapter's base; --base (the control) to --model when an adapter is given."""
    from medfactory.eval.mcqa import check_model_reference

    if adapter:
        check_model_reference(adapter, "--adapter")
    if model is None:
        if not adapter:
            raise AuditError("give --model (a base or merged model folder) or --adapter (a LoRA adapter folder, whose base is read from it).")
        model, from_adapter = adapter_base(adapter), True
    else:
        from_adapter = False
    try:
        check_model_reference(model, "--model")
    except ValueError as error:
        raise AuditError(f"{error} {_named_by(adapter) if from_adapter else ''}".strip()) from error
    if base is None:
        return Models(model, adapter, model if adapter else None, shared=bool(adapter), model_from_adapter=from_adapter)
    check_model_reference(base, "--base")
    same = Path(base).expanduser().resolve() == Path(model).expanduser().resolve() if Path(base).expanduser().exists() else base == model
    return Models(model, adapter, base, shared=bool(adapter) and same, model_from_adapter=from_adapter)


def _named_by(adapter: str | None) -> str:
    return f"(The base named by {Path(str(adapter)) / 'adapter_config.json'}: pass --model to give its folder here.)"


def check_output(output: Path, replace: bool) -> None:
    """Refuse a non-empty --output unless --replace: a finished audit is not overwritten by mistake."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise AuditError(f"--output {output}: a file, not a folder. Fix: pass a folder, e.g. reports/audit/<run>.")
    if output.is_dir() and any(output.iterdir()) and not replace:
        raise AuditError(f"--output {output} exists and is not empty. Fix: pass --replace to overwrite it, or another --output.")


def audit_model(model: Any, tokenizer: Any, canaries: Sequence[Canary], notes: Sequence[NoteSet], settings: AuditSettings, label: str,
                progress: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """(canary rows, note rows) of one model."""
    canary_rows = audit_canaries(model, tokenizer, canaries, settings, label, progress)
    note_rows = [row for note_set in notes for row in audit_notes(model, tokenizer, note_set, settings, label, progress)]
    return canary_rows, note_rows


def _load(reference: str, adapter: str | None, dtype: str, device: str | None, flag: str) -> tuple[Any, Any]:
    from medfactory.eval.mcqa import McqaError, load_model

    try:
        return load_model(reference, adapter, dtype, device)
    except McqaError as error:  # load_model names its --model; a control model is --base
        raise AuditError(str(error).replace("--model", flag, 1) if flag != "--model" else str(error)) from error


def _audit_all(models: Models, canaries: Sequence[Canary], scans: Sequence[tuple[NoteSet, list[int]]], settings: AuditSettings, device: str | None,
               dtype: str, progress: bool) -> tuple[dict[str, tuple[list, list]], list[NoteSet], dict[str, str]]:  # fmt: skip
    """Rows of the model and of its control, the notes audited, and how the model ran (device, dtype, document start)."""
    try:
        network, tokenizer = _load(models.model, models.adapter, dtype, device, "--model")
    except AuditError as error:
        raise AuditError(f"{error} {_named_by(models.adapter)}" if models.model_from_adapter else str(error)) from error
    parameter = next(network.parameters())
    context = context_ids(tokenizer)
    ran = {"device": str(parameter.device), "dtype": str(parameter.dtype).removeprefix("torch."),
           "context": "BOS" if context and context[0] == tokenizer.bos_token_id else "EOS" if context else "none (the first token is not scored)"}  # fmt: skip
    notes = [pick_notes(note_set, lines, tokenizer, settings) for note_set, lines in scans]
    results = {models.label: audit_model(network, tokenizer, canaries, notes, settings, models.label, progress)}
    if models.base and models.shared:
        with network.disable_adapter():  # the same weights without the adapter: no second copy in memory
            results["base"] = audit_model(network, tokenizer, canaries, notes, settings, "base", progress)
    elif models.base:
        del network
        _free_memory()
        base_network, base_tokenizer = _load(models.base, None, dtype, device, "--base")
        results["base"] = audit_model(base_network, base_tokenizer, canaries, notes, settings, "base", progress)
    return results, notes, ran


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _canary_file_info(path: Path, canaries: Sequence[Canary]) -> dict[str, Any]:
    import json

    document = json.loads(Path(path).read_text(encoding="utf-8"))
    kinds: dict[str, int] = {}
    for canary in canaries:
        kinds[canary.kind] = kinds.get(canary.kind, 0) + 1
    return {"dataset": document.get("dataset"), "language": document.get("language"), "inserted_into": document.get("inserted_into"),
            "canaries": len(canaries), "kinds": kinds, "repetitions": sorted({canary.repetitions for canary in canaries})}  # fmt: skip


def build_metrics(models: Models, canaries_path: Path, canaries: Sequence[Canary], notes: Sequence[NoteSet], settings: AuditSettings,
                  results: dict[str, tuple[list, list]], ran: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """metrics.json's content: settings, the canary file's counts, per-model summaries, the model-base comparison."""
    summaries = {label: {"canaries": summarize_canaries(canary_rows), "notes": summarize_notes(note_rows, settings) if note_rows else None}
                 for label, (canary_rows, note_rows) in results.items()}  # fmt: skip
    comparison: dict[str, Any] = {}
    if "base" in results and len(results) == 2:
        model_rows, base_rows = results[models.label], results["base"]
        comparison["exposure_mean_difference"] = summaries[models.label]["canaries"]["exposure_mean"] - summaries["base"]["canaries"]["exposure_mean"]
        if model_rows[1]:
            comparison["calibrated_membership"] = calibrated_membership(model_rows[1], base_rows[1])
    settings_record = {
        "model": models.model, "adapter": models.adapter, "base": models.base, "base_is_model_without_adapter": models.shared,
        "canaries": str(canaries_path), "canaries_sha256": sha256_file(canaries_path),
        "train": str(notes[0].path) if notes else None, "heldout": str(notes[1].path) if len(notes) > 1 else None,
        "candidates": settings.candidates, "samples": settings.samples, "top_k": TOP_K, "temperature": 1.0, "notes": settings.notes,
        "prefix_tokens": settings.prefix_tokens, "continuation_tokens": settings.continuation_tokens, "verbatim_tokens": settings.verbatim_tokens,
        "loss_tokens": settings.loss_tokens, "batch_size": settings.batch_size, "seed": settings.seed, **ran,
    }  # fmt: skip
    return _json_safe({
        "format": REPORT_FORMAT,
        "settings": settings_record,
        "canary_file": _canary_file_info(canaries_path, canaries),
        "notes": {n.split: {"file": str(n.path), "records": n.records, "canary_copies": n.canary_copies, "too_short": n.too_short, "audited": len(n.lines)}
                  for n in notes},
        "models": summaries,
        "comparison": comparison,
        "versions": package_versions(("medfactory", "torch", "transformers", "tokenizers", "peft", "numpy", "scipy"), python=True),
    })  # fmt: skip


def write_outputs(output: Path, metrics: dict[str, Any], results: dict[str, tuple[list, list]]) -> None:
    """metrics.json, canaries.csv, notes.csv, the figures and report.md, in a staging folder renamed to ``output`` at the end."""
    canary_rows = [row for canary_rows, _ in results.values() for row in canary_rows]
    note_rows = [row for _, note_rows in results.values() for row in note_rows]
    with atomic_directory(Path(output)) as staging:
        write_json_atomic(staging / METRICS_JSON, metrics)
        write_csv(staging / CANARIES_CSV, CANARY_COLUMNS, canary_rows)
        write_csv(staging / NOTES_CSV, NOTE_COLUMNS, note_rows)
        plot_exposure(canary_rows, staging / EXPOSURE_PNG)
        if note_rows:
            labels = list(results)
            calibrated = None
            if "base" in results and len(labels) == 2:
                base = {(row["split"], row["line"]): row["loss"] for row in results["base"][1]}
                calibrated = {split: _finite(row["loss"] - base[(split, row["line"])] for row in results[labels[0]][1] if row["split"] == split)
                              for split in ("train", "heldout")}  # fmt: skip
            plot_losses(note_rows, calibrated, staging / LOSS_PNG)
        with atomic_write(staging / REPORT_MD) as handle:
            handle.write(render_report(metrics, canary_rows))


def run_memorization_audit(
    canaries_path: Path,
    model: str | None = None,
    adapter: str | None = None,
    base: str | None = None,
    train: Path | None = None,
    heldout: Path | None = None,
    output: Path | None = None,
    replace: bool = False,
    settings: AuditSettings | None = None,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """Audit ``model`` (+ ``adapter``) and its base; write the report folder; return (metrics, folder).

    Everything that can be refused (settings, model folders, the output folder, the canary file,
    the note files) is refused before a model loads.
    """
    settings = settings or AuditSettings()
    settings.check()
    if (train is None) != (heldout is None):
        raise AuditError("pass --train and --heldout together: the held-out notes are the control of the training notes.")
    models = resolve_models(model, adapter, base)
    output = Path(output) if output else Path("reports/audit") / Path(models.adapter or models.model).name
    check_output(output, replace)
    canaries = load_canaries(Path(canaries_path))
    scans = [scan_notes(path, flag, split, canaries) for path, flag, split in ((train, "--train", "train"), (heldout, "--heldout", "heldout")) if path]
    results, notes, ran = _audit_all(models, canaries, scans, settings, None if device == "auto" else device, dtype, progress)
    metrics = build_metrics(models, Path(canaries_path), canaries, notes, settings, results, ran)
    write_outputs(output, metrics, results)
    return metrics, output
