"""The bounded-memory near-duplicate index gives the in-memory index's answers, note for note,
and ``prepare --near-duplicates`` writes the same bytes with it as with the note-by-note path."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import medfactory.corpus.pipeline as pipeline
from medfactory.corpus.dedup import NearDuplicateIndex, normalise_for_dedup
from medfactory.corpus.near_dedup import DiskNearDuplicateIndex, batch_signatures
from medfactory.corpus.pipeline import PrepareOptions, prepare_corpus
from medfactory.corpus.splits import SplitPlan
from medfactory.corpus.synthetic_notes import generate_notes
from medfactory.plugins.semclinbr import SEMCLINBR_MAPPING

VOCABULARY = ["dor", "febre", "paciente", "evolui", "bem", "PA", "120x80", "sem", "queixas", "ÉDEMA", "mmhg", "d2"]


def reference_answers(texts: list[str], threshold: float = 0.85) -> list[str | None]:
    """What today's in-memory index says, note after note (the keys are the note numbers)."""
    index = NearDuplicateIndex(threshold=threshold)
    return [index.add_if_new(f"{number:016x}", text) for number, text in enumerate(texts)]


def disk_answers(texts: list[str], batch: int, folder: Path, threshold: float = 0.85, workers: int = 1, normalise: bool = True) -> tuple[list[str | None], int]:
    """The disk index's answers in batches of ``batch`` notes (normalised first, as ``prepare`` does), and how many runs it had on disk."""
    keys = [f"{number:016x}" for number in range(len(texts))]
    answers: list[str | None] = []
    with DiskNearDuplicateIndex(folder, threshold=threshold, workers=workers) as index:
        for start in range(0, len(texts), batch):
            part = texts[start : start + batch]
            answers += index.add_batch(keys[start : start + batch], [normalise_for_dedup(text) for text in part] if normalise else part)
        runs = len(list(index.folder.glob("run-*.keys")))
    return answers, runs


def copy_forward(texts: list[str], rng: random.Random) -> str:
    """An earlier note with a few words inserted, deleted or replaced (a copy-forward note)."""
    words = rng.choice(texts).split(" ")
    for _ in range(rng.randrange(4)):
        position = rng.randrange(len(words))
        action = rng.randrange(3)
        if action == 0:
            words.insert(position, rng.choice(VOCABULARY))
        elif action == 1 and len(words) > 1:
            del words[position]
        else:
            words[position] = rng.choice(VOCABULARY)
    return " ".join(words)


texts_strategy = st.text(alphabet=st.sampled_from("ab cÉé\u0301\n\t  \u200b.,X1"), max_size=60) | st.text(max_size=40)


@settings(max_examples=150, deadline=None)
@given(st.lists(texts_strategy, max_size=12))
def test_batch_signatures_equal_datasketch_minhash(texts: list[str]) -> None:
    index = NearDuplicateIndex()
    texts = [*texts, "", " ", "one", "a b c d e", "a b c d e f", "a  b   c d e f g"]
    expected = np.array([index.minhash(text).hashvalues for text in texts], dtype=np.uint32)
    assert np.array_equal(batch_signatures(texts, 128, 1, 5), expected)


def test_batch_signatures_equal_datasketch_across_sha1_block_boundaries() -> None:
    # Shingles of 0 to 200 bytes: one, two, three and four SHA-1 blocks, the padding's edge cases (55/56, 119/120 bytes) included.
    texts = ["x" * length for length in range(201)] + [" ".join(["ç" * length] * 6) for length in range(0, 40, 3)]
    index = NearDuplicateIndex()
    expected = np.array([index.minhash(text).hashvalues for text in texts], dtype=np.uint32)
    assert np.array_equal(batch_signatures(texts), expected)
    assert np.array_equal(batch_signatures(texts, threads=2), expected)  # notes shared among threads: the same values


def test_batch_signatures_of_a_long_note_equal_datasketch() -> None:
    text = " ".join(f"w{number % 5000}" for number in range(60_000))  # 60 k shingles in one note
    assert np.array_equal(batch_signatures([text, "short"])[0], NearDuplicateIndex().minhash(text).hashvalues)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.lists(st.lists(st.sampled_from(VOCABULARY), min_size=0, max_size=14).map(" ".join), min_size=1, max_size=40),
    batch=st.integers(1, 9),
    threshold=st.sampled_from([0.3, 0.6, 0.85]),
)
def test_same_answers_as_the_in_memory_index_on_a_small_vocabulary(tmp_path: Path, data: list[str], batch: int, threshold: float) -> None:
    # A small vocabulary makes many near and exact copies: the answers (best key, ties by order) must agree.
    assert disk_answers(data, batch, tmp_path, threshold)[0] == reference_answers(data, threshold)


def test_same_answers_on_copy_forward_notes_across_batches_and_runs(tmp_path: Path) -> None:
    rng = random.Random(3)
    texts: list[str] = []
    for note in generate_notes(600, seed=5):
        texts.append(copy_forward(texts, rng) if texts and rng.random() < 0.4 else note)
    expected = reference_answers(texts)
    assert sum(answer is not None for answer in expected) > 100  # the planted copies are found
    answers, runs = disk_answers(texts, 7, tmp_path)
    assert answers == expected
    assert runs > 1  # history in several sorted runs on disk
    assert disk_answers(texts, 250, tmp_path)[0] == expected
    assert disk_answers(texts, 250, tmp_path, workers=2)[0] == expected  # signatures hashed on two threads


def test_same_answers_when_the_caller_passes_text_not_yet_normalised(tmp_path: Path) -> None:
    # Copies differing only in case and spacing are the same note to both indexes: the disk index normalises too.
    rng = random.Random(4)
    texts: list[str] = []
    for note in generate_notes(200, seed=6):
        copied = copy_forward(texts, rng) if texts and rng.random() < 0.4 else note
        texts.append(copied.upper().replace(" ", "  ") if rng.random() < 0.3 else copied)
    expected = reference_answers(texts)
    assert sum(answer is not None for answer in expected) > 40
    assert disk_answers(texts, 50, tmp_path, normalise=False)[0] == expected


def test_the_compiled_pair_test_equals_the_lsh_rule_written_in_numpy() -> None:
    """compare_pairs against the rule as numpy states it: a band equal throughout and at least min_equal equal values;
    pairs built to pass one condition and not the other, and random ones."""
    from medfactory.corpus.minhash_kernel import compare_pairs

    rng = np.random.default_rng(5)
    bands, rows, num_perm, min_equal = 9, 13, 128, 103
    first = rng.integers(0, 2**32, (600, num_perm), dtype=np.uint64).astype(np.uint32)
    second = first.copy()
    for pair in range(600):
        changed = rng.choice(num_perm, size=int(rng.integers(0, 60)), replace=False)
        second[pair, changed] ^= np.uint32(1 + pair)
    second[:2] = first[:2]
    second[0, [band * rows for band in range(bands)]] ^= np.uint32(1)  # every band broken, 119 of 128 equal
    second[1, rows:] ^= np.uint32(1)  # band 0 equal, too few equal values
    same = first == second
    equal = np.count_nonzero(same, axis=1)
    band_equal = same[:, : bands * rows].reshape(len(same), bands, rows).all(axis=2).any(axis=1)
    got_equal, got_ok = compare_pairs(first, second, bands, rows, min_equal)
    assert got_equal.tolist() == equal.tolist() and got_ok.tolist() == (band_equal & (equal >= min_equal)).tolist()
    assert not got_ok[0] and got_equal[0] == num_perm - bands and not got_ok[1] and 0 < got_ok.sum() < 600


def test_files_are_removed_on_close(tmp_path: Path) -> None:
    with DiskNearDuplicateIndex(tmp_path) as index:
        assert index.add_batch(["a", "b"], ["paciente evolui bem sem queixas hoje", "paciente evolui bem sem queixas hoje"]) == [None, "a"]
        assert index.folder.parent == tmp_path and any(index.folder.iterdir())
    assert list(tmp_path.iterdir()) == []


def test_keys_must_fit_the_key_file(tmp_path: Path) -> None:
    with DiskNearDuplicateIndex(tmp_path) as index, pytest.raises(ValueError, match="1 to 16 ASCII"):
        index.add_batch(["x" * 17], ["text"])


def planted_corpus(path: Path) -> Path:
    """Notes of a few patients with copy-forward notes (small edits), exact copies and unrelated notes."""
    rng = random.Random(8)
    texts: list[str] = []
    for note in generate_notes(400, seed=9):
        texts.append(copy_forward(texts, rng) if texts and rng.random() < 0.5 else note)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "id_paciente", "data", "texto"])
        for number, text in enumerate(texts):
            writer.writerow([f"n{number}", f"p{number % 37}", "2020-01-01", text])
    return path


def prepared_files(source: Path, root: Path) -> dict[str, bytes]:
    options = PrepareOptions(
        name="notes_nd", mapping=SEMCLINBR_MAPPING, split=SplitPlan(0.1, 0.2, seed=11), likert_notes=3,
        likert_min_characters=100, min_characters=20, near_duplicate_threshold=0.85,
    )  # fmt: skip
    manifest = prepare_corpus([source], options, root)
    # Every file but the manifest byte for byte; the manifest apart from its creation time.
    files = {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file() and path.name != "manifest.json"}
    manifest.pop("created_utc", None)
    files["manifest"] = json.dumps(manifest, sort_keys=True, default=str).replace(str(root), "ROOT").encode()
    return files


def test_prepare_writes_the_same_bytes_as_the_note_by_note_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = planted_corpus(tmp_path / "notes.csv")
    monkeypatch.setattr(pipeline, "NEAR_DUPLICATE_STORE", "memory")
    expected = prepared_files(source, tmp_path / "memory")
    monkeypatch.setattr(pipeline, "NEAR_DUPLICATE_STORE", "disk")
    monkeypatch.setattr(pipeline, "NEAR_DUPLICATE_BATCH_NOTES", 7)  # many batches, many runs
    batched = prepared_files(source, tmp_path / "disk")
    assert json.loads(expected["manifest"])["dropped"]["near_duplicate"] > 30
    assert sorted(batched) == sorted(expected) and any(name.endswith("train.jsonl") for name in batched)
    assert batched == expected
    assert not list((tmp_path / "disk").rglob(".near-duplicates-*"))  # the index's files are gone
