"""Decoding and normalising clinical text, shared by every corpus plugin.

Hospital exports mix UTF-8 and cp1252 (often within one file), so decoding is per line or per
file: UTF-8 first, then cp1252. Files with a UTF-16 or UTF-32 byte-order mark, and files in a forced
encoding whose line ends are not the byte ``\n`` (UTF-16/32 without a mark, EBCDIC), are decoded as
one stream instead (:func:`stream_codec`). Normalisation is conservative: it must keep de-identification
placeholders (``[NOME]``, ``<PACIENTE>``, ``***``, ``XXXX``) exactly as they are.
"""

from __future__ import annotations

import codecs
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


# Longest first: the UTF-32-LE mark starts with the UTF-16-LE one.
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# What a CSV / JSONL reader splits and parses on: an encoding that writes these as ASCII can be decoded per line.
_STRUCTURE = "\n\r,;|\t\"{}:[]id"


def wide_bom_codec(prefix: bytes) -> str | None:
    """``"utf-16"`` or ``"utf-32"`` when ``prefix`` starts with that byte-order mark (either byte
    order): the codec that reads the mark, takes its byte order and drops it; None otherwise."""
    return next((codec for bom, codec in _WIDE_BOMS if prefix.startswith(bom)), None)


def encoding_problem(encoding: str) -> str | None:
    """Why ``encoding`` cannot decode a text file (unknown, or a bytes-to-bytes codec), or None."""
    if encoding == AUTO_ENCODING:
        return None
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        return "it is not a codec Python knows"
    if not getattr(info, "_is_text_encoding", True):  # base64, rot13, zlib...: bytes to bytes
        return "it is not a text encoding"
    return None


def stream_codec(encoding: str, prefix: bytes) -> str | None:
    """The codec a file starting with ``prefix`` must be decoded with as one stream, or None to
    decode it per line: in ``auto`` mode a UTF-16/32 byte-order mark; otherwise a forced encoding
    that does not write line ends and delimiters as their ASCII bytes (UTF-16/32, EBCDIC)."""
    if encoding == AUTO_ENCODING:
        return wide_bom_codec(prefix)
    name = codecs.lookup(encoding).name
    try:
        ascii_compatible = _STRUCTURE.encode(name) == _STRUCTURE.encode("ascii")
    except UnicodeError:
        ascii_compatible = False
    if ascii_compatible:
        return None
    if name in ("utf-16", "utf-32") and wide_bom_codec(prefix) != name:
        return _byte_order(name, prefix)
    return name


def _byte_order(codec: str, prefix: bytes) -> str:
    """``utf-16`` / ``utf-32`` without a byte-order mark (its stream decoder needs one): ``-le`` or
    ``-be`` by where the zero bytes of ASCII characters fall in ``prefix`` (little-endian when tied)."""
    size = 2 if codec == "utf-16" else 4
    little = sum(1 for offset in range(size - 1, len(prefix), size) if prefix[offset] == 0)
    big = sum(1 for offset in range(0, len(prefix), size) if prefix[offset] == 0)
    return f"{codec}-{'be' if big > little else 'le'}"


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
