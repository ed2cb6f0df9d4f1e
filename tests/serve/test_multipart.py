"""The form reader behind the upload endpoints: what clients write comes back part by part, and
anything else is a FormError with the status to answer."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainlab.serve.multipart import (
    MAX_HEADER_BYTES,
    FormError,
    Part,
    boundary_of,
    header_parameters,
    parse_form,
)


def encode_with_httpx(fields: list[tuple[str, str | None, bytes]]) -> tuple[str, bytes]:
    """(Content-Type, body) exactly as httpx sends ``files=`` (a real client's encoder)."""
    files = [
        (name, (filename, data, "application/octet-stream")) for name, filename, data in fields
    ]
    request = httpx.Request("POST", "http://127.0.0.1/", files=files)
    return request.headers["content-type"], request.read()


def parse(content_type: str, body: bytes, max_parts: int = 100) -> list[Part]:
    return parse_form(body, boundary_of(content_type), max_parts=max_parts)


# Field and file names as people have them: non-ASCII, quotes, backslashes, semicolons, spaces.
NAMES = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=20)


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(st.lists(st.tuples(NAMES, st.one_of(st.none(), NAMES), st.binary(max_size=200)),
                min_size=1, max_size=8))  # fmt: skip
def test_what_httpx_sends_comes_back_unchanged(fields):
    content_type, body = encode_with_httpx(fields)
    parts = parse(content_type, body)
    assert [p.data for p in parts] == [data for _, _, data in fields]
    assert [p.name for p in parts] == [as_sent(name) for name, _, _ in fields]
    # httpx sends a part without a file name as a plain field (no filename parameter).
    assert [p.filename for p in parts] == [
        filename and as_sent(filename) for _, filename, _ in fields
    ]


def as_sent(name: str) -> str:
    """Browsers and httpx write a quote in a name as %22 (WHATWG); a server cannot tell that
    from a literal "%22", so it is read back as sent."""
    return name.replace('"', "%22")


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"--B", b"\r\n--B", b"\r\n--B--", b"--B--\r\n"]))
def test_data_that_looks_like_a_boundary_survives(data, trap):
    # Boundary text inside the data that is not at a line start (or not the whole boundary).
    content = data + b"x" + trap + b"y"
    content_type, body = encode_with_httpx([("file", "d.png", content)])
    assert parse(content_type, body)[0].data == content


def test_browser_style_body_with_preamble_epilogue_and_padding():
    body = (b"ignored preamble\r\n"
            b"------WebKitFormBoundaryAbC  \r\n"  # transport padding after the boundary
            b'Content-Disposition: form-data; name="file"; filename="quote%22d.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
            b"\x89PNG\r\n\r\n--not the boundary\r\n"
            b"------WebKitFormBoundaryAbC--\r\nignored epilogue")  # fmt: skip
    (part,) = parse("multipart/form-data; boundary=----WebKitFormBoundaryAbC", body)
    assert part == Part("file", "quote%22d.png", "image/png", b"\x89PNG\r\n\r\n--not the boundary")


def test_quoted_parameters_and_rfc5987_file_names():
    kind, parameters = header_parameters(
        r"""form-data; name="a;b"; filename="C:\\x\"y.png"; filename*=UTF-8''%E6%95%B0%E5%AD%97.png"""
    )
    assert header_parameters(r'form-data; filename="C:\\x\"y.png"')[1]["filename"] == 'C:\\x"y.png'
    assert kind == "form-data" and parameters["name"] == "a;b"
    assert parameters["filename"] == "数字.png"  # the extended form wins
    assert header_parameters('form-data; NAME="x"')[1] == {"name": "x"}
    # Browsers and curl send backslashes unescaped: only \" and \\ are escapes.
    assert header_parameters(r'form-data; filename="C:\Users\me\d.png"')[1]["filename"] == (
        "C:\\Users\\me\\d.png"
    )
    # An extended value without charset'language' does not replace a good plain one.
    assert (
        header_parameters('form-data; filename="d.png"; filename*=x.png')[1]["filename"] == "d.png"
    )
    content_type = 'Multipart/Form-Data; charset=utf-8; boundary="a b:c"'
    assert boundary_of(content_type) == b"a b:c"


@pytest.mark.parametrize(
    "charset", ["undefined", "idna", "utf-8\x00", "x" * 300, "rot13", "base64"]
)
def test_a_client_named_charset_is_never_looked_up(charset):
    import encodings

    cached = len(encodings._cache)
    value = f"form-data; name=file; filename=d.png; filename*={charset}''%41"
    assert header_parameters(value)[1]["filename"] == "d.png"  # unknown charset: plain value
    assert boundary_of(f"multipart/form-data; boundary=B; x*={charset}''%41") == b"B"
    assert len(encodings._cache) == cached  # no codec lookup (each one is cached forever)
    assert header_parameters("a; f*=ISO-8859-1'en'%E9")[1]["f"] == "é"


def test_a_part_without_headers_and_an_empty_part():
    body = b"--B\r\n\r\nraw\r\n--B\r\nContent-Disposition: form-data; name=file\r\n\r\n\r\n--B--"
    assert parse("multipart/form-data; boundary=B", body) == [
        Part(None, None, None, b"raw"), Part("file", None, None, b"")]  # fmt: skip


@pytest.mark.parametrize(
    ("content_type", "status", "message"),
    [
        ("application/json", 415, "not multipart/form-data"),
        ("image/png; boundary=B", 415, "not multipart/form-data"),
        ("", 415, "none, not multipart"),
        ("multipart/form-data", 400, "without a valid boundary"),
        ("multipart/form-data; boundary=", 400, "without a valid boundary"),
        ("multipart/form-data; boundary=" + "x" * 201, 400, "without a valid boundary"),
        ("multipart/form-data; boundary=\u00e9", 400, "without a valid boundary"),
    ],
)  # fmt: skip
def test_content_types_that_are_refused(content_type, status, message):
    with pytest.raises(FormError, match=message) as caught:
        boundary_of(content_type)
    assert caught.value.status == status


GOOD = b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\ndata\r\n--B--\r\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "no boundary line"),
        (b"just some bytes", "no boundary line"),
        (GOOD.replace(b"\r\n", b"\n"), "malformed boundary line"),  # bare LF line ends
        (GOOD[:-9], "ends before its closing boundary"),  # cut off in the data
        (GOOD[:3], "cut off or has a malformed boundary line"),
        (GOOD[:5], "headers are cut off"),
        (b"--B\r\nContent-Disposition: form-data", "headers are cut off"),
        (b"--Bx\r\n" + GOOD[5:], "malformed boundary line"),  # a longer boundary
        (b"--B\r\nno colon here\r\n\r\ndata\r\n--B--", "malformed header line"),
        (b"--B\r\nX: " + b"y" * MAX_HEADER_BYTES + b"\r\n\r\ndata\r\n--B--", "longer than"),
    ],
)  # fmt: skip
def test_bodies_that_are_refused(body, message):
    with pytest.raises(FormError, match=message) as caught:
        parse("multipart/form-data; boundary=B", body)
    assert caught.value.status == 400


def test_too_many_parts_is_413_before_the_rest_is_split():
    body = b"".join(b"--B\r\n\r\nx\r\n" for _ in range(10_000)) + b"--B--"
    with pytest.raises(FormError, match="more than 5 parts") as caught:
        parse("multipart/form-data; boundary=B", body, max_parts=5)
    assert caught.value.status == 413
    assert len(parse("multipart/form-data; boundary=B", body, max_parts=10_000)) == 10_000


def test_parts_that_are_not_form_data_have_no_name():
    body = b'--B\r\nContent-Disposition: attachment; name="file"\r\n\r\nx\r\n--B--'
    assert parse("multipart/form-data; boundary=B", body)[0].name is None
