"""A strict, bounded reader of ``multipart/form-data`` bodies for the upload endpoints.

Why not Starlette's form parser (python-multipart): it reads part headers byte by byte in Python
and spools every file to a temporary file, about a third of the event loop's time per
``/predict`` of a digit. Every upload here is read whole anyway (it is decoded in one piece), and
the body is bounded before it is read, so the whole body is split with ``bytes.find``: a few
microseconds for a digit, and the same for a 10 MB photo.

What is accepted follows RFC 7578 / RFC 2046 as browsers, curl, httpx and requests write it:
an optional preamble, ``--boundary`` lines (trailing spaces allowed), part headers, and a final
``--boundary--``. Everything else is a :class:`FormError` saying what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

MAX_HEADER_BYTES = 8 * 1024  # one part's header block
MAX_BOUNDARY = 200  # RFC 2046 allows 70; be lenient, but bound the search pattern

# ``; key=value`` or ``; key="quoted \" value"`` after the first token of a header value.
_PARAMETER = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.DOTALL)
# Only \" and \\ are escapes: browsers and curl send other backslashes as they are (C:\x\d.png).
_ESCAPED = re.compile(r'\\([\\"])')
# The charsets an RFC 8187 ``key*=charset''value`` may name. Never a codec lookup by a client's
# name: each unknown one is an import attempt, cached forever (memory), and some raise oddly.
_CHARSETS = {"utf-8": "utf-8", "utf8": "utf-8", "iso-8859-1": "latin-1", "latin1": "latin-1",
             "latin-1": "latin-1", "us-ascii": "ascii", "ascii": "ascii"}  # fmt: skip


class FormError(ValueError):
    """The body is not a readable form; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class TooManyParts(FormError):
    """More parts than the caller allows: the form was not read to its end."""

    def __init__(self, max_parts: int):
        super().__init__(f"more than {max_parts} parts in one request", status=413)


@dataclass(frozen=True)
class Part:
    name: str | None
    filename: str | None  # None: sent as a plain field, not as a file
    content_type: str | None
    data: bytes


def header_parameters(value: str) -> tuple[str, dict[str, str]]:
    """``'form-data; name="a"; filename*=UTF-8''%C3%A9.png'`` -> ``('form-data', {...})``.
    Keys are lower-case; quoted values are unescaped; an RFC 5987 ``key*`` value is decoded and
    wins over the plain ``key``."""
    kind, _, rest = value.partition(";")
    parameters: dict[str, str] = {}
    extended: dict[str, str] = {}
    for key, raw in _PARAMETER.findall(";" + rest):
        key = key.lower()
        text = raw.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = _ESCAPED.sub(r"\1", text[1:-1])
        if key.endswith("*"):
            pieces = text.split("'", 2)  # charset'language'percent-encoded
            encoding = _CHARSETS.get(pieces[0].strip().lower()) if len(pieces) == 3 else None
            if encoding is not None:  # otherwise keep the plain value, if any
                extended[key[:-1]] = unquote(pieces[2], encoding=encoding, errors="replace")
        else:
            parameters[key] = text
    parameters.update(extended)
    return kind.strip().lower(), parameters


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, or a :class:`FormError`."""
    kind, parameters = header_parameters(content_type)
    if kind != "multipart/form-data":
        shown = kind or "none"
        raise FormError(f"the body is {shown}, not multipart/form-data", status=415)
    boundary = parameters.get("boundary", "")
    if not boundary or len(boundary) > MAX_BOUNDARY or not boundary.isascii():
        raise FormError("multipart/form-data without a valid boundary in the Content-Type header")
    if any(c in boundary for c in "\r\n"):
        raise FormError("the multipart boundary contains a line break")
    return boundary.encode("ascii")


def _part(header_block: bytes, data: bytes) -> Part:
    headers: dict[str, str] = {}
    for line in header_block.split(b"\r\n") if header_block else ():
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise FormError("a multipart part has a malformed header line")
        # RFC 7578 lets part headers carry UTF-8 (browsers send file names that way).
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode(
            "utf-8", errors="replace"
        )
    kind, parameters = header_parameters(headers.get("content-disposition", ""))
    if kind != "form-data":
        return Part(None, None, headers.get("content-type"), data)  # not a form field: ignored
    return Part(parameters.get("name"), parameters.get("filename"), headers.get("content-type"),
                data)  # fmt: skip


def parse_form(body: bytes, boundary: bytes, *, max_parts: int) -> list[Part]:
    """Split a whole ``multipart/form-data`` body into its parts (at most ``max_parts``)."""
    dash = b"--" + boundary
    if body.startswith(dash):
        position = 0
    else:  # a preamble before the first boundary line is allowed, and ignored
        position = body.find(b"\r\n" + dash)
        if position < 0:
            raise FormError("the multipart body has no boundary line: not the boundary named in "
                            "the Content-Type header, or not a form at all")  # fmt: skip
        position += 2
    parts: list[Part] = []
    while True:
        position += len(dash)
        if body.startswith(b"--", position):  # the closing boundary; an epilogue is ignored
            return parts
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise FormError("the multipart body is cut off or has a malformed boundary line")
        start = line_end + 2
        if body.startswith(b"\r\n", start):  # a part without headers
            header_block, data_start = b"", start + 2
        else:
            header_end = body.find(b"\r\n\r\n", start, start + MAX_HEADER_BYTES)
            if header_end < 0:
                raise FormError("a multipart part's headers are cut off or longer than "
                                f"{MAX_HEADER_BYTES:,} bytes")  # fmt: skip
            header_block, data_start = body[start:header_end], header_end + 4
        end = body.find(b"\r\n" + dash, data_start)
        if end < 0:
            raise FormError("the multipart body ends before its closing boundary (a truncated "
                            "upload?)")  # fmt: skip
        if len(parts) == max_parts:
            raise TooManyParts(max_parts)
        parts.append(_part(header_block, body[data_start:end]))
        position = end + 2
