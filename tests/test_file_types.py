"""File type checks and safe file names (pure logic, no servers)."""

from __future__ import annotations

import pytest

from tests.files_helpers import PDF, PNG
from whatschat import file_types


@pytest.mark.parametrize(
    ("content_type", "head"),
    [
        ("image/png", PNG),
        ("image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF"),
        ("image/gif", b"GIF89a\x01\x00"),
        ("image/gif", b"GIF87a\x01\x00"),
        ("image/webp", b"RIFF\x24\x00\x00\x00WEBPVP8 "),
        ("application/pdf", PDF),
        ("text/plain", "héllo\tworld\r\n".encode()),
    ],
)
def test_each_type_accepts_its_own_signature(content_type: str, head: bytes) -> None:
    assert file_types.matches(content_type, head, whole=True)


@pytest.mark.parametrize(
    ("content_type", "head"),
    [
        ("image/png", b"\x89PNX\r\n\x1a\n"),
        ("image/jpeg", PNG),
        ("image/gif", b"GIF90a"),
        ("image/webp", b"RIFF\x24\x00\x00\x00AVI "),
        ("application/pdf", b"<html>%PDF-"),
        ("text/plain", b"MZ\x90\x00\x03\x00"),
        ("text/plain", b"\xff\xfe not utf-8"),
        ("image/svg+xml", b"<svg/>"),  # no check, so never a match
    ],
)
def test_each_type_refuses_other_content(content_type: str, head: bytes) -> None:
    assert not file_types.matches(content_type, head, whole=True)


def test_text_sample_may_end_inside_a_character_unless_it_is_the_whole_file() -> None:
    cut = "é".encode()[:1]
    assert file_types.matches("text/plain", b"abc" + cut, whole=False)
    assert not file_types.matches("text/plain", b"abc" + cut, whole=True)


def test_allowlist_parsing_normalizes_and_refuses_unchecked_types() -> None:
    assert file_types.allowed_types(" Image/PNG , application/pdf,,image/png") == (
        "image/png",
        "application/pdf",
    )
    with pytest.raises(ValueError, match="image/svg"):
        file_types.allowed_types("image/png,image/svg+xml")


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("photo.png", "photo.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("  spaced   out  .txt ", "spaced out .txt"),
        ("bell\x07\u202egnp.exe", "bellgnp.exe"),  # control and bidi override removed
        ("...", ""),
        ("x" * 300 + ".jpeg", "x" * 115 + ".jpeg"),
        ("Grüße.txt", "Grüße.txt"),
    ],
)
def test_file_names_are_cleaned(name: str, cleaned: str) -> None:
    assert file_types.clean_file_name(name) == cleaned
    assert len(file_types.clean_file_name(name)) <= file_types.MAX_FILE_NAME_CHARS


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"),
        (
            'a"b;c\r\nd.txt',
            "attachment; filename=\"a_b_cd.txt\"; filename*=UTF-8''a%22b%3Bcd.txt",
        ),
        (
            "naïve café.png",
            "attachment; filename=\"naive cafe.png\"; filename*=UTF-8''na%C3%AFve%20caf%C3%A9.png",
        ),
        ("日本.txt", "attachment; filename=\"file.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt"),
        ("", "attachment; filename=\"file\"; filename*=UTF-8''file"),
    ],
)
def test_content_disposition_is_attachment_with_a_safe_ascii_fallback(
    name: str, expected: str
) -> None:
    assert file_types.content_disposition(name) == expected
