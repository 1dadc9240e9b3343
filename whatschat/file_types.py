"""What a file may be: allowed types, their first bytes, and safe file names.

Pure logic, no I/O: :mod:`whatschat.files` reads an uploaded object's first
bytes and asks :func:`matches` whether they fit the declared type, and builds
download headers with :func:`content_disposition`. See docs/files.md.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Callable
from urllib.parse import quote

# How many leading bytes a check needs: a text check samples this much.
SAMPLE_BYTES = 4096
# File names are kept this short (in characters): they travel percent-encoded
# in the object's metadata, which S3 caps at 2 KiB.
MAX_FILE_NAME_CHARS = 120

# Control characters that never occur in text a person would call plain:
# everything below 0x20 except tab, line feed, vertical tab, form feed,
# carriage return and escape.
_BINARY_CONTROLS = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def _jpeg(head: bytes, whole: bool) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def _png(head: bytes, whole: bool) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def _gif(head: bytes, whole: bool) -> bool:
    return head.startswith((b"GIF87a", b"GIF89a"))


def _webp(head: bytes, whole: bool) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _pdf(head: bytes, whole: bool) -> bool:
    return head.startswith(b"%PDF-")


def _text(head: bytes, whole: bool) -> bool:
    """UTF-8 without binary control characters. A sample cut inside a
    multi-byte character is fine unless the sample is the whole file."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError:
        return False
    return _BINARY_CONTROLS.search(text) is None


# content type -> check of the object's first bytes (at most SAMPLE_BYTES).
# Only these types can be allowed: a type without a check could carry anything
# (SVG and HTML are left out on purpose: a browser runs their scripts).
SIGNATURES: dict[str, Callable[[bytes, bool], bool]] = {
    "image/jpeg": _jpeg,
    "image/png": _png,
    "image/gif": _gif,
    "image/webp": _webp,
    "application/pdf": _pdf,
    "text/plain": _text,
}


def allowed_types(setting: str) -> tuple[str, ...]:
    """The allowlist from the ``UPLOAD_CONTENT_TYPES`` setting (comma-separated).

    Raises ValueError for a type that has no signature check, so a
    misconfiguration fails loudly instead of letting unchecked files in.
    """
    types = tuple(dict.fromkeys(t for t in (normalize(p) for p in setting.split(",")) if t))
    unknown = [t for t in types if t not in SIGNATURES]
    if unknown:
        raise ValueError(
            f"UPLOAD_CONTENT_TYPES lists types without a content check: {', '.join(unknown)};"
            f" choose from {', '.join(SIGNATURES)}"
        )
    return types


def normalize(content_type: str) -> str:
    """``"Image/PNG; x=y"`` -> ``"image/png"``: the base type, lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def matches(content_type: str, head: bytes, whole: bool) -> bool:
    """Whether ``head`` (an object's first bytes; ``whole`` if that is all of it)
    looks like ``content_type``."""
    check = SIGNATURES.get(content_type)
    return check is not None and check(head, whole)


def served_type(content_type: str) -> str:
    """The Content-Type a download is served with (text is checked to be UTF-8)."""
    return "text/plain; charset=utf-8" if content_type == "text/plain" else content_type


def clean_file_name(name: str) -> str:
    """A display name safe to store and show: no folders, no control or
    format characters, trimmed, at most MAX_FILE_NAME_CHARS characters
    (the extension is kept). Empty when nothing usable remains."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] not in ("C", "Z") or ch == " ")
    name = re.sub(r" {2,}", " ", name).strip(" .")
    if len(name) > MAX_FILE_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= 16:
            keep = MAX_FILE_NAME_CHARS - len(extension) - 1
            name = f"{stem[:keep].rstrip(' .')}.{extension}"
        else:
            name = name[:MAX_FILE_NAME_CHARS].rstrip(" .")
    return name


def _ascii(text: str) -> str:
    """Accents dropped, anything a quoted header value could trip on replaced."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9 ._()+,=@~-]", "_", plain).strip(" .")


def content_disposition(file_name: str) -> str:
    """``attachment`` with an ASCII ``filename`` fallback and the exact name in
    RFC 5987 ``filename*``: the browser saves the file, never renders it inline."""
    cleaned = clean_file_name(file_name) or "file"
    stem, _, extension = cleaned.rpartition(".")
    if not stem:
        stem, extension = cleaned, ""
    ascii_stem = _ascii(stem) or "file"  # "日本.txt" -> "file.txt"
    ascii_extension = _ascii(extension)
    ascii_name = f"{ascii_stem}.{ascii_extension}" if ascii_extension else ascii_stem
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(cleaned, safe='')}"


def encode_metadata(value: str) -> str:
    """Percent-encode a value for S3 user metadata (which must be ASCII)."""
    return quote(value, safe="")
