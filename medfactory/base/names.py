"""Names that become paths: every path built from data or user input stays inside its folder.

A dataset name, a study or image id from a source table, a model name in models.yaml or a card id
is one path component. :func:`safe_component` refuses separators, ``..``, absolute paths, control
characters and names that Unicode normalisation (NFKC, as some file systems and tools apply) turns
into one of those; :func:`confined_path` joins and checks the resolved result against the folder,
so a symlink inside it cannot lead out either.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from medfactory.base.errors import CorpusError

# Windows reserved names would fail on a shared drive mounted from Windows; refuse them everywhere.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
MAX_COMPONENT_CHARS = 200


def _problem(value: str) -> str | None:
    """Why ``value`` cannot be one path component, or None when it can."""
    if not value:
        return "it is empty"
    if len(value) > MAX_COMPONENT_CHARS:
        return f"it is longer than {MAX_COMPONENT_CHARS} characters"
    for form in {value, unicodedata.normalize("NFKC", value), unicodedata.normalize("NFC", value)}:
        if "/" in form or "\\" in form:
            return "it contains a path separator"
        if form in (".", "..") or form.strip(" .") == "":
            return "it is '.' or '..'"
        if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in form):
            return "it contains a control or invisible character"
        if len(form) >= 2 and form[1] == ":" and form[0].isalpha():
            return "it is a drive path"
    if value.split(".")[0].lower() in _RESERVED:
        return "it is a reserved device name"
    return None


def safe_component(value: object, what: str, where: str = "", fix: str = "", show_value: bool = True) -> str:
    """``value`` as one path component, or a :class:`CorpusError` naming ``what`` and ``where``.

    Values read from a clinical file pass ``show_value=False``: the message then names the record
    (``where``), never the value.
    """
    text = "" if value is None else str(value)
    problem = _problem(text)
    if problem is None:
        return text
    shown = f" {text!r}" if show_value else " (value not shown)"
    location = f"{where}: " if where else ""
    raise CorpusError(f"{location}{what}{shown} cannot name a file or folder: {problem}. {fix or 'Fix: use letters, digits, - and _.'}")


def confined_path(folder: Path, *components: object, what: str, where: str = "", fix: str = "", show_value: bool = True) -> Path:
    """``folder / c1 / c2 ...`` with each component checked, and the result checked to resolve inside ``folder``."""
    folder = Path(folder)
    path = folder.joinpath(*(safe_component(component, what, where, fix, show_value) for component in components))
    base = folder.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        location = f"{where}: " if where else ""
        raise CorpusError(f"{location}{what} leads outside {folder} (through a link). {fix or 'Fix: remove the link, or choose another name.'}")
    return path
