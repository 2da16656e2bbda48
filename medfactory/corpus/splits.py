"""Deterministic splits by group: every note of a group lands in the same split.

A note's group is its patient, or its admission where the export has no patient id, or the
note itself where it has neither. The split of a group is a pure function of (seed, group), so
a rerun, or a corpus that grows, never moves a group between train and evaluation. Only when
every note has a patient id are the splits patient-disjoint; otherwise the same patient can be
in train and test, and :func:`split_disjointness` says so for the manifest and the summary.

The held-out notes of the Likert study are drawn from the test split (never from training):
the ``k`` test-split groups with the smallest hashes, one note each, kept in O(k) memory while
the corpus streams past.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "validation", "test")


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from (seed, key): the same on every machine and run."""
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class SplitPlan:
    validation_fraction: float = 0.01
    test_fraction: float = 0.01
    seed: int = 20240901

    def __post_init__(self) -> None:
        if not (0 <= self.validation_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ValueError("validation and test fractions must be in [0, 1)")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation + test fractions must leave something for training")

    def split_of(self, group: str) -> str:
        value = unit_hash(self.seed, group)
        if value < self.test_fraction:
            return "test"
        if value < self.test_fraction + self.validation_fraction:
            return "validation"
        return "train"


def group_of(patient_id: str | None, admission_id: str | None, note_key: str) -> tuple[str, str]:
    """(group kind, group key): patient, else admission, else the note itself."""
    if patient_id:
        return "patient", f"patient:{patient_id}"
    if admission_id:
        return "admission", f"admission:{admission_id}"
    return "note", f"note:{note_key}"


_CAVEATS = {
    "admission": ("admission", "have no patient id"),
    "note": ("note", "have neither a patient nor an admission id"),
}


def split_disjointness(notes_by_group_kind: Mapping[str, int]) -> dict[str, Any]:
    """``{"patient_disjoint": bool, "split_caveats": [...]}`` for notes counted by group kind.

    Patient-disjoint only when every note was grouped by its patient; each other kind gets one
    caveat (counts only), e.g. "splits are by admission; the same patient can be in train and
    test (90 of 90 notes have no patient id)".
    """
    total = sum(notes_by_group_kind.values())
    caveats = []
    for kind, (unit, why) in _CAVEATS.items():
        count = notes_by_group_kind.get(kind, 0)
        if count:
            caveats.append(f"splits are by {unit}; the same patient can be in train and test ({count:,} of {total:,} notes {why})")
    return {"patient_disjoint": total > 0 and not caveats, "split_caveats": caveats}


@dataclass
class HeldOutSampler:
    """Keeps the ``size`` groups with the smallest hashes (one note each) among those offered."""

    size: int
    seed: int
    min_characters: int = 200
    _heap: list[tuple[float, str]] = field(default_factory=list)  # max-heap by negated group hash
    _chosen: dict[str, tuple[float, Any]] = field(default_factory=dict)  # group -> (note hash, record)

    def offer(self, group: str, note_key: str, record: Any, characters: int) -> None:
        if self.size <= 0 or characters < self.min_characters:
            return
        group_hash = unit_hash(self.seed + 1, group)
        note_hash = unit_hash(self.seed + 2, note_key)
        if group in self._chosen:
            if note_hash < self._chosen[group][0]:
                self._chosen[group] = (note_hash, record)
            return
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, (-group_hash, group))
        elif group_hash < -self._heap[0][0]:
            _, evicted = heapq.heapreplace(self._heap, (-group_hash, group))
            del self._chosen[evicted]
        else:
            return
        self._chosen[group] = (note_hash, record)

    def records(self) -> list[Any]:
        """The chosen notes, in a stable order (by group hash)."""
        order = sorted((-negated, group) for negated, group in self._heap)
        return [self._chosen[group][1] for _, group in order]
