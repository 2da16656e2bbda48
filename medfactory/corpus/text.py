"""Decoding and normalising clinical text, shared by every corpus plugin.

Hospital exports mix UTF-8 and cp1252 (often within one file), so decoding is per line or per
file: UTF-8 first, then cp1252. Normalisation is conservative: it must keep de-identification
placeholders (``[NOME]``, ``<PACIENTE>``, ``***``, ``XXXX``) exactly as they are.
"""

from __future__ import annotations

import re
import unicodedata

AUTO_ENCODING = "auto"
# cp1252 leaves these bytes undefined; Latin-1 maps them to C1 control characters.
CP1252_UNDEFINED = frozenset(b"\x81\x8d\x8f\x90\x9d")


class UndecodableBytes(ValueError):
    """Bytes that are neither UTF-8 nor cp1252 (or not in a forced encoding)."""

    def __init__(self, offset: int, byte: int, encoding: str) -> None:
        super().__init__(f"byte 0x{byte:02X} at offset {offset} is not valid {encoding}")
        self.offset, self.byte, self.encoding = offset, byte, encoding


def decode(data: bytes, encoding: str = AUTO_ENCODING) -> tuple[str, str]:
    """Decode ``data``; return (text, encoding used). ``auto`` tries UTF-8, then cp1252."""
    if encoding != AUTO_ENCODING:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError as error:
            raise UndecodableBytes(error.start, data[error.start], encoding) from error
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError as error:
        raise UndecodableBytes(error.start, data[error.start], "UTF-8 nor cp1252") from error


# Control characters (not \t \n) and the zero-width ones are dropped; exotic spaces become spaces.
_DROP = {code: None for code in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *range(0x80, 0xA0)]}
_DROP.update({code: None for code in (0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD)})
_SPACES = {code: " " for code in (0x00A0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000)}
_TRANSLATION = {**_DROP, **_SPACES, 0x0D: "\n", 0x2028: "\n", 0x2029: "\n"}
# Hot path (millions of notes): each pattern matches only what it changes, so clean text costs
# one C-level scan per pattern and no replacement; str.translate runs only when needed.
_NEEDS_TRANSLATION = re.compile("[" + "".join(re.escape(chr(code)) for code in sorted(_TRANSLATION)) + "]")
_HORIZONTAL_RUNS = re.compile(r"[ \t]{2,}|\t")
_SPACE_AROUND_NEWLINE = re.compile(r" \n ?|\n ")
_BLANK_LINE_RUNS = re.compile(r"\n{3,}")
_NEEDS_DROP = re.compile("[" + "".join(re.escape(chr(code)) for code in sorted(_DROP)) + "]")


def remove_invisible(text: str) -> str:
    """``text`` without control (except tab, LF, CR) and zero-width characters: what
    :func:`normalise_note` drops, for callers that compare texts (duplicate keys)."""
    return text.translate(_DROP) if _NEEDS_DROP.search(text) else text


def normalise_note(text: str) -> str:
    """NFC, CRLF to LF, no control characters, single spaces, at most one blank line, stripped.

    Placeholders survive: only whitespace and invisible characters change, never visible ones.
    """
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n")
    if _NEEDS_TRANSLATION.search(text):
        text = text.translate(_TRANSLATION)
    # Substring tests are far faster than a regex scan; most notes need none of these fixes.
    if "  " in text or "\t" in text:
        text = _HORIZONTAL_RUNS.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINE_RUNS.sub("\n\n", text)
    return text.strip()
