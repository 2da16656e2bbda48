"""Tagging with a trained crfsuite model from per-word score vectors: crfsuite's labels, several times faster.

``pycrfsuite.Tagger.tag`` takes every token's ~25 feature strings, looks each up in the model's
dictionary and sums their weights; on clinical text that string traffic, and building the strings
in Python, is most of the time (0.2 MB/s per core). Every feature of :func:`.crf.features` is a
function of one word (its own features, what it lends to its neighbours, the header feature of the
line it starts, the cue it is) or one of a few context flags, so :class:`FastCrf` sums the weights
once per distinct word, caches the vectors, and builds each token's label scores with numpy.
Viterbi (crfsuite's: transitions, no start or end weights) then runs over many notes in lockstep,
one numpy step per token position of a batch instead of one per token.

The labels are crfsuite's own (tests/test_deid_crf_viterbi.py compares them on MEDDOCAN dev and on
random texts). The weights are read from the model's dump, which prints six decimals, so two label
paths closer than that could be ordered differently. docs/deid.md ("Speed") has the numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import NamedTuple

import numpy as np
import pycrfsuite

from medfactory.corpus.deid import crf
from medfactory.corpus.deid.spans import PhiSpan

# The tokens of crf.tokenize plus the gaps between them (whitespace and "_", which crf.tokenize skips),
# so that offsets are running sums of the pieces' lengths.
_PIECES_RE = re.compile(r"[^\W\d_]+|\d+|[^\w\s]|[\s_]+")
# What a gap piece starts with: "_" or a whitespace character (all of them lie below U+3001).
_GAP_START = frozenset(["_", *(chr(code) for code in range(0x3001) if chr(code).isspace())])
_BATCH_CELLS = 4_000_000  # padded (sequence, token, label) cells per lockstep batch: 32 MB of float64 scores
_CACHE_WORDS = 40_000  # distinct words whose score vectors are kept (7 x 44 labels x 8 bytes: 100 MB at most)
_OWN, _BEFORE_2, _BEFORE_1, _AFTER_1, _AFTER_2, _HEADER, _CUE = range(7)


class FastCrf:
    """A crfsuite model's weights as dense arrays; :meth:`labels` tags a text as ``Tagger.tag(features(...))`` would."""

    def __init__(self, tagger: pycrfsuite.Tagger) -> None:
        info = tagger.info()
        self.label_names: list[str] = tagger.labels()
        label_index = {name: index for index, name in enumerate(self.label_names)}
        attributes = sorted({attribute for attribute, _ in info.state_features})
        self._attribute_index = {attribute: index for index, attribute in enumerate(attributes)}
        self._weights = np.zeros((len(attributes) + 1, len(self.label_names)))  # last row: features the model lacks
        for (attribute, label), weight in info.state_features.items():
            self._weights[self._attribute_index[attribute], label_index[label]] = weight
        self.transitions = np.zeros((len(self.label_names), len(self.label_names)))
        for (source, target), weight in info.transitions.items():
            self.transitions[label_index[source], label_index[target]] = weight
        self.outside = label_index.get("O", 0)
        self._flags = {name: self._vector((name,)) for name in ("bol", "glued", *(pad for pads in crf.PAD for pad in pads))}
        self._rules: dict[str, np.ndarray] = {}
        self._vocabulary: dict[str, int] = {}  # word -> row of self._table
        self._table = np.zeros((1024, 7, len(self.label_names)))
        self._is_cue = np.zeros(1024, dtype=bool)

    def _vector(self, names: Sequence[str]) -> np.ndarray:
        rows = [self._attribute_index.get(name, -1) for name in names]
        return self._weights[rows].sum(axis=0)

    def word_vectors(self, word: str) -> np.ndarray:
        """(7, labels): the summed weights of what ``word`` contributes as itself, to its neighbours, as its line's header and as a cue."""
        own, lower, before_2, before_1, after_1, after_2 = crf.word_features(word)
        cue = (f"cue={lower}",) if lower in crf.CUES else ()
        return np.stack([self._vector(group) for group in (own, before_2, before_1, after_1, after_2, (f"hd={lower}",), cue)])

    def _word_rows(self, words: Sequence[str]) -> np.ndarray:
        """Each word's row of the vector table, adding the words not seen yet (the table is emptied past _CACHE_WORDS)."""
        vocabulary = self._vocabulary
        new = [word for word in dict.fromkeys(words) if word not in vocabulary]
        if len(vocabulary) + len(new) > _CACHE_WORDS:
            vocabulary.clear()  # simplest bound on memory; clinical vocabularies refill it quickly
            new = list(dict.fromkeys(words))
        if new:
            first = len(vocabulary)
            needed = first + len(new)
            if needed > len(self._table):
                size = min(max(needed, 2 * len(self._table)), max(needed, _CACHE_WORDS))
                self._table = np.concatenate([self._table, np.zeros((size - len(self._table), *self._table.shape[1:]))])
                self._is_cue = np.concatenate([self._is_cue, np.zeros(size - len(self._is_cue), dtype=bool)])
            for row, word in enumerate(new, first):
                vocabulary[word] = row
                self._table[row] = self.word_vectors(word)
                self._is_cue[row] = word.lower() in crf.CUES
        return np.fromiter(map(vocabulary.__getitem__, words), dtype=np.intp, count=len(words))

    def scores(self, pieces: TokenContext, rule_categories: Sequence[str] | None = None) -> np.ndarray:
        """The (tokens, labels) state scores of tokenised text: the sum of the weights of its crf.features()."""
        count = len(pieces.words)
        if not count:
            return np.zeros((0, len(self.label_names)))
        ids = self._word_rows(pieces.words)
        table = self._table
        scores = table[ids, _OWN].copy()
        scores[2:] += table[ids[:-2], _BEFORE_2]
        scores[1:] += table[ids[:-1], _BEFORE_1]
        scores[:-1] += table[ids[1:], _AFTER_1]
        scores[:-2] += table[ids[2:], _AFTER_2]
        for position, pad in ((slice(0, 2), "-2pad"), (slice(0, 1), "-1pad"), (slice(-1, None), "1pad"), (slice(-2, None), "2pad")):
            scores[position] += self._flags[pad]
        positions = np.arange(count)
        line_first = np.maximum.accumulate(np.where(pieces.line_start, positions, 0))  # each token's line's first token
        scores += table[ids[line_first], _HEADER]
        scores[pieces.line_start] += self._flags["bol"]
        scores[pieces.glued] += self._flags["glued"]
        # cue=<word>: the latest cue word at most 5 tokens back on the same line (as crf.features).
        is_cue = self._is_cue[ids]
        never = -count - crf.CUE_WINDOW - 1
        latest = np.maximum.accumulate(np.where(is_cue, positions, never))
        before = np.r_[never, latest[:-1]]
        near = (before >= line_first) & (positions - before <= crf.CUE_WINDOW)
        scores[near] += table[ids[before[near]], _CUE]
        for index, category in enumerate(rule_categories or ()):
            if category:
                scores[index] += self._rule_vector(category)
        return scores

    def _rule_vector(self, category: str) -> np.ndarray:
        vector = self._rules.get(category)
        if vector is None:
            vector = self._rules[category] = self._vector((f"rule={category}",))
        return vector

    def decode_many(self, all_scores: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The best label path (Viterbi, as crfsuite: no start or end weights) of each score matrix, as label indices.

        Sequences are decoded in lockstep, longest first, in batches of similar length: one numpy step
        per token position for the whole batch instead of one per token of every sequence.
        """
        paths: list[np.ndarray] = [np.zeros(0, dtype=np.intp)] * len(all_scores)
        order = sorted((index for index, scores in enumerate(all_scores) if len(scores)), key=lambda index: -len(all_scores[index]))
        batch: list[int] = []
        for index in order:
            batch.append(index)
            # Batches hold at most _BATCH_CELLS padded (token, label) cells: bounded memory for long notes.
            if (len(batch) + 1) * len(all_scores[batch[0]]) * len(self.label_names) > _BATCH_CELLS:
                self._decode_batch(all_scores, batch, paths)
                batch = []
        if batch:
            self._decode_batch(all_scores, batch, paths)
        return paths

    def _decode_batch(self, all_scores: Sequence[np.ndarray], batch: list[int], paths: list[np.ndarray]) -> None:
        lengths = np.array([len(all_scores[index]) for index in batch])  # longest first
        width = len(self.label_names)
        padded = np.zeros((len(batch), lengths[0], width))
        for row, index in enumerate(batch):
            padded[row, : lengths[row]] = all_scores[index]
        back = np.zeros((len(batch), lengths[0], width), dtype=np.uint8 if width < 256 else np.intp)
        incoming = np.ascontiguousarray(self.transitions.T)[None]  # (1, next, previous): reductions run over the last axis
        best = padded[:, 0].copy()
        active = len(batch)
        for step in range(1, lengths[0]):
            while lengths[active - 1] <= step:
                active -= 1
            candidates = best[:active, None, :] + incoming  # (active, next, previous)
            choice = candidates.argmax(axis=2)
            back[:active, step] = choice
            best[:active] = np.take_along_axis(candidates, choice[..., None], axis=2)[..., 0] + padded[:active, step]
        # Backtrack every row at once: a row joins when the step reaches its last token.
        path = np.zeros((len(batch), lengths[0]), dtype=np.intp)
        rows = np.arange(len(batch))
        last = lengths - 1
        path[rows, last] = best.argmax(axis=1)
        for step in range(lengths[0] - 1, 0, -1):
            live = rows[last >= step]
            path[live, step - 1] = back[live, step, path[live, step]]
        for row, index in enumerate(batch):
            paths[index] = path[row, : lengths[row]]


class TokenContext(NamedTuple):
    """crf.tokenize's tokens as arrays: their words, offsets, line starts and whether each touches the one before."""

    words: list[str]
    starts: np.ndarray
    ends: np.ndarray
    line_start: np.ndarray
    glued: np.ndarray

    def tokens(self) -> list[crf.Token]:
        return [crf.Token(int(start), int(end), word) for start, end, word in zip(self.starts, self.ends, self.words, strict=True)]


def tokenize(text: str) -> TokenContext:
    """crf.tokenize's tokens with their context, from one regex pass (no per-token Python object)."""
    pieces = _PIECES_RE.findall(text)
    lengths = np.fromiter(map(len, pieces), dtype=np.intp, count=len(pieces))
    ends = np.cumsum(lengths)
    gap = np.fromiter(map(_GAP_START.__contains__, map(itemgetter(0), pieces)), dtype=bool, count=len(pieces))
    token_index = np.flatnonzero(~gap)
    words = [pieces[index] for index in token_index.tolist()]
    newline_gap = gap & np.fromiter(map(str.__contains__, pieces, repeat("\n")), dtype=bool, count=len(pieces))
    # A token starts a line when it is the first or a gap with a line break came after the previous token.
    seen_newline = np.cumsum(newline_gap)[token_index]
    line_start = np.r_[True, seen_newline[1:] > seen_newline[:-1]] if len(token_index) else np.zeros(0, dtype=bool)
    glued = np.r_[False, np.diff(token_index) == 1] if len(token_index) else np.zeros(0, dtype=bool)
    return TokenContext(words, (ends - lengths)[token_index], ends[token_index], line_start, glued)


def spans_from_label_ids(pieces: TokenContext, path: np.ndarray, label_names: Sequence[str]) -> list[PhiSpan]:
    """crf.spans_from_labels over the tagged tokens only (O tokens, the vast majority, are never visited)."""
    tagged = np.flatnonzero(path != label_names.index("O")) if "O" in label_names else np.arange(len(path))
    if not len(tagged):
        return []
    kept = tagged.tolist()
    tokens = [crf.Token(int(pieces.starts[index]), int(pieces.ends[index]), pieces.words[index]) for index in kept]
    labels = [label_names[path[index]] for index in kept]
    # Neighbouring tagged tokens stay neighbours only when adjacent in the text: an O between them ends a run.
    spans: list[PhiSpan] = []
    run_tokens: list[crf.Token] = []
    run_labels: list[str] = []
    previous = -2
    for index, token, label in zip(kept, tokens, labels, strict=True):
        if index != previous + 1 and run_tokens:
            spans += crf.spans_from_labels(run_tokens, run_labels)
            run_tokens, run_labels = [], []
        run_tokens.append(token)
        run_labels.append(label)
        previous = index
    if run_tokens:
        spans += crf.spans_from_labels(run_tokens, run_labels)
    return spans
