"""Form bodies: `application/x-www-form-urlencoded` and `multipart/form-data`, one record each.

Both become one JSON-like object by the same rules (`nest`):
- Values stay texts; the mapping's type coercion makes numbers, dates or booleans of them.
- Bracketed names nest: `data[merges][FNAME]=Ada` -> `{"data": {"merges": {"FNAME": "Ada"}}}`,
  so the field's dotted path is `data.merges.FNAME`. A name is a base (no brackets) followed
  by `[part]` groups only; any other name (`a[b`, `a]`, `[a]`, `a[b]c`) is a key as written.
  Dots are not split (`a.b=1` is the key `a.b`, which a dotted path cannot address).
- A repeated name becomes an array, in body order: `tag=a&tag=b` -> `{"tag": ["a", "b"]}`.
  `a[]=x` appends to the array `a` (`a[]=x&a[]=y` -> `["x", "y"]`, and `a=x&a[]=y` alike);
  `a[][sku]=A` appends a new object each time.
- Numeric parts are object keys, not array positions: `items[0][sku]=A` ->
  `{"items": {"0": {"sku": "A"}}}`, which the dotted path `items.0.sku` addresses exactly as
  it addresses a JSON array (and `items[99999999]` allocates nothing).
- Conflicts are refused, not guessed: a name that needs a group where an earlier field put a
  value (`a=1&a[b]=2`), a value where a group is (`a[b]=1&a=2`), or an object key in an array
  (`a[]=1&a[b]=2`) is `bad_form`, naming the field.
- At most `MAX_FIELDS` fields and `MAX_DEPTH` bracket levels; a name may not be empty.

URL-encoded bodies follow the WHATWG parser (split on `&`, then on the first `=`; `+` is a
space; empty segments are skipped; a name without `=` has the value ""), except that a `%`
not followed by two hex digits, and bytes that are not valid in the charset after decoding,
are `bad_form` errors that say at which byte of the body, instead of being let through. The
charset parameter (default UTF-8) is honoured; it must be an ASCII-compatible text encoding.

Multipart bodies go through python-multipart's streaming parser. Each part needs
`Content-Disposition: form-data; name="..."`; the name is a quoted string, so a backslash in
it escapes the next character (as in Starlette, which uses the same parser). Text parts (no
Content-Type, or `text/*`, decoded with the part's charset, else the body's, else UTF-8) are
fields as above. A part with a filename, or with another Content-Type, is a file:
`unsupported_media_type` naming the field, refused as its headers end, before any of its
content is looked at. An empty file input (`filename=""` with no content, as browsers send an
unused file field) is skipped.

Error details name fields and byte offsets, never values.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Final
from urllib.parse import unquote_to_bytes

from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

MAX_FIELDS: Final = 1000
MAX_DEPTH: Final = 16  # bracket levels after the base name
_NAME_SHOWN: Final = 80  # characters of a field name an error detail shows

# python-multipart logs a warning with bytes of the body for every malformed body; the
# client already gets a 400 that says where, and respondent data stays out of the logs.
logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)

_KEY: Final = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_PART: Final = re.compile(r"\[([^\[\]]*)\]")
_BAD_ESCAPE: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_JSONISH: Final = re.compile(rb'\s*(?:\{|\[\s*[\[{"\]])')
_ASCII: Final = bytes(range(0x20, 0x7F))
_FILENAME_EXT: Final = re.compile(r";\s*filename\*", re.IGNORECASE)
_TRANSFER_OK: Final = frozenset({"", "7bit", "8bit", "binary"})


class FormError(ValueError):
    """A form that cannot be read: `code` `bad_form` (400) or `unsupported_media_type` (415),
    `detail` a sentence without values. `automations.bodies.BodyError` wraps it."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _bad(detail: str) -> FormError:
    return FormError("bad_form", detail)


def _shown(name: str) -> str:
    return name if len(name) <= _NAME_SHOWN else name[:_NAME_SHOWN - 1] + "…"


@functools.lru_cache(maxsize=64)
def charset_problem(charset: str) -> str | None:
    """Why `charset` cannot decode a form (None when it can): it must be a text encoding
    that reads ASCII as ASCII, since the body's `&`, `=`, `%` and names are ASCII."""
    try:
        "".encode(charset)  # a LookupError also for bytes-to-bytes codecs such as base64
    except (LookupError, ValueError):  # ValueError: a name Python cannot look up at all
        return f"charset '{charset[:40]}' is not a known text encoding"
    try:
        ok = _ASCII.decode(charset) == _ASCII.decode("ascii") and \
            _ASCII.decode("ascii").encode(charset) == _ASCII
    except ValueError:  # UnicodeError: the ASCII bytes do not even decode
        ok = False
    return None if ok else f"charset '{charset[:40]}' is not ASCII-compatible; send UTF-8"


# --- nesting -------------------------------------------------------------------------------

def key_parts(name: str) -> list[str]:
    """`data[merges][FNAME]` -> ["data", "merges", "FNAME"]; `a[]` -> ["a", ""] (append);
    a name that is not `base[part]...` is one key as written."""
    if "[" not in name:
        return [name]
    match = _KEY.fullmatch(name)
    if match is None or not match.group(2):
        return [name]
    return [match.group(1), *_PART.findall(match.group(2))]


def _kind(value: Any) -> str:
    return "a value" if type(value) is str else "a list" if type(value) is list else "a group"


def nest(fields: list[tuple[str, str, str]]) -> dict[str, Any]:
    """One record from (name, value, where) triples in body order; `where` says where the
    field is in the body ("at byte 17", "in part 3") for error details."""
    if len(fields) > MAX_FIELDS:
        raise _bad(f"the form has {len(fields)} fields; at most {MAX_FIELDS} are accepted")
    root: dict[str, Any] = {}
    for name, value, where in fields:
        if not name:
            raise _bad(f"the field {where} has no name")
        parts = key_parts(name)
        if len(parts) - 1 > MAX_DEPTH:
            raise _bad(f"field '{_shown(name)}' ({where}) nests {len(parts) - 1} levels deep; "
                       f"at most {MAX_DEPTH} are accepted")
        _put(root, parts, value, name, where)
    return root


def _put(root: dict[str, Any], parts: list[str], value: str, name: str, where: str) -> None:
    node: Any = root
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if part == "":  # `[]`: append; `node` is a list (chosen when its parent was walked)
            if i == last:
                node.append(value)
            else:
                child: Any = [] if parts[i + 1] == "" else {}
                node.append(child)
                node = child
            continue
        # A key: `node` is a dict (the root, or chosen for this part when its parent was walked).
        existing = node.get(part)
        if i == last:
            if existing is None:
                node[part] = value
            elif type(existing) is str:
                node[part] = [existing, value]
            elif type(existing) is list:
                existing.append(value)
            else:
                raise _conflict(name, where, parts[:i + 1], existing)
            continue
        wants_list = parts[i + 1] == ""
        if existing is None:
            child = [] if wants_list else {}
            node[part] = child
        elif wants_list and type(existing) is list:
            child = existing
        elif wants_list and type(existing) is str:  # `a=x&a[]=y`: both append to `a`
            child = node[part] = [existing]
        elif not wants_list and type(existing) is dict:
            child = existing
        else:
            raise _conflict(name, where, parts[:i + 1], existing)
        node = child


def _conflict(name: str, where: str, path: list[str], existing: Any) -> FormError:
    dotted = ".".join(p or "[]" for p in path)
    return _bad(f"field '{_shown(name)}' ({where}) does not fit the fields before it: "
                f"'{_shown(dotted)}' is already {_kind(existing)}")


# --- application/x-www-form-urlencoded -----------------------------------------------------

def parse_urlencoded(body: bytes, charset: str = "utf-8") -> dict[str, Any]:
    """The record of a URL-encoded body (see the module's docstring); FormError otherwise."""
    if _JSONISH.match(body):
        raise _bad("the body looks like JSON but its Content-Type is "
                   "application/x-www-form-urlencoded (curl -d sends that); send it with "
                   "Content-Type: application/json")
    bad = _BAD_ESCAPE.search(body)
    if bad is not None:
        raise _bad(f"bad percent-encoding at byte {bad.start()}: '%' must be followed by two "
                   "hex digits (write a literal '%' as %25)")
    fields: list[tuple[str, str, str]] = []
    offset = 0
    for segment in body.split(b"&"):
        start, offset = offset, offset + len(segment) + 1
        if not segment:
            continue
        if len(fields) == MAX_FIELDS:
            raise _bad(f"the form has more than {MAX_FIELDS} fields")
        raw_name, eq, raw_value = segment.partition(b"=")
        where = f"at byte {start}"
        name = _decode(raw_name, charset, start, None)
        value = _decode(raw_value, charset, start + len(raw_name) + len(eq), name)
        fields.append((name, value, where))
    if not fields:
        raise FormError("empty", "the form has no fields")
    return nest(fields)


def _decode(raw: bytes, charset: str, start: int, name: str | None) -> str:
    """Percent-decode one name or value (escapes already checked) and decode it strictly."""
    data = raw.replace(b"+", b" ")
    if b"%" in data:
        data = unquote_to_bytes(data)
    try:
        return data.decode(charset)
    except UnicodeDecodeError as exc:
        what = f"the value of field '{_shown(name)}'" if name is not None else "a field name"
        raise _bad(f"{what} at byte {start + _raw_offset(raw, exc.start)} is not valid "
                   f"{charset} after percent-decoding") from None


def _raw_offset(raw: bytes, decoded_index: int) -> int:
    """The offset in `raw` of byte `decoded_index` of its percent-decoded form."""
    i = seen = 0
    while i < len(raw) and seen < decoded_index:
        i += 3 if raw[i:i + 1] == b"%" else 1
        seen += 1
    return i


# --- multipart/form-data -------------------------------------------------------------------

class _Multipart:
    """Callbacks for python-multipart's parser: the text parts as (name, value, where)."""

    def __init__(self, charset: str) -> None:
        self.charset = charset
        self.fields: list[tuple[str, str, str]] = []
        self.number = 0
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.name = ""
        self.part_charset = charset
        self.empty_file = False
        self.ended = False

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value_data, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def part_begin(self) -> None:
        self.number += 1
        if self.number > MAX_FIELDS:
            raise _bad(f"the form has more than {MAX_FIELDS} parts")
        self.headers = {}
        self.chunks = []
        self.empty_file = False

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value_data(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_name.decode("latin-1").strip().lower()] = \
            self.header_value.decode("latin-1").strip()
        self.header_name.clear()
        self.header_value.clear()

    def headers_finished(self) -> None:
        where = f"in part {self.number}"
        disposition = self.headers.get("content-disposition")
        if disposition is None:
            raise _bad(f"part {self.number} has no Content-Disposition header; each part needs "
                       "Content-Disposition: form-data; name=\"...\"")
        kind, params = parse_options_header(disposition)
        raw_name = params.get(b"name")
        if kind != b"form-data" or raw_name is None:
            raise _bad(f"part {self.number} needs Content-Disposition: form-data; name=\"...\"")
        try:
            self.name = raw_name.decode("utf-8")  # browsers send names as UTF-8 bytes
        except UnicodeDecodeError:
            raise _bad(f"the name of part {self.number} is not valid UTF-8") from None
        if not self.name:
            raise _bad(f"the field {where} has no name")
        filename = params.get(b"filename")
        content_type, type_params = parse_options_header(self.headers.get("content-type"))
        if filename is not None or _FILENAME_EXT.search(disposition):
            if filename == b"" and content_type in (b"", b"application/octet-stream"):
                self.empty_file = True  # an unused file input: skipped if it has no content
                return
            raise self._file()
        if content_type and not content_type.startswith(b"text/"):
            raise FormError("unsupported_media_type",
                            f"part {self.number} (field '{_shown(self.name)}') is "
                            f"{content_type.decode('latin-1')[:60]}; only text fields are "
                            "accepted, not files")
        transfer = self.headers.get("content-transfer-encoding", "").lower()
        if transfer not in _TRANSFER_OK:
            raise _bad(f"part {self.number} (field '{_shown(self.name)}') uses "
                       f"Content-Transfer-Encoding {transfer[:20]}; send the text as it is")
        charset = type_params.get(b"charset")
        self.part_charset = charset.decode("latin-1").strip().lower() if charset else \
            self.charset
        problem = charset_problem(self.part_charset)
        if problem is not None:
            raise FormError("unsupported_media_type", f"part {self.number} (field "
                            f"'{_shown(self.name)}'): {problem}")

    def _file(self) -> FormError:
        return FormError("unsupported_media_type",
                         f"part {self.number} (field '{_shown(self.name)}') is a file; files are "
                         "not accepted (nothing was stored): send text fields only")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.empty_file:
            if end > start:
                raise self._file()
            return
        self.chunks.append(data[start:end])

    def part_end(self) -> None:
        if self.empty_file:
            return
        raw = b"".join(self.chunks)
        self.chunks = []
        try:
            value = raw.decode(self.part_charset)
        except UnicodeDecodeError as exc:
            raise _bad(f"the value of part {self.number} (field '{_shown(self.name)}') is not "
                       f"valid {self.part_charset} at byte {exc.start} of the value") from None
        self.fields.append((self.name, value, f"in part {self.number}"))

    def end(self) -> None:
        self.ended = True


def parse_multipart(body: bytes, boundary: str | None, charset: str = "utf-8") -> dict[str, Any]:
    """The record of a multipart/form-data body (see the module's docstring)."""
    if not boundary:
        raise _bad("the Content-Type multipart/form-data has no boundary parameter")
    reader = _Multipart(charset)
    try:
        parser = MultipartParser(boundary.encode("latin-1"), reader.callbacks())  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise _bad(f"the multipart body is malformed at byte {exc.offset}: each part starts "
                   "with '--' and the boundary of the Content-Type header, and lines end in "
                   "CRLF") from None
    except FormParserError:
        raise _bad("the boundary parameter is too long") from None
    except UnicodeEncodeError:
        raise _bad("the boundary parameter is not ASCII") from None
    if not reader.ended or parser.state != MultipartState.END:
        raise _bad("the multipart body ends before its closing boundary "
                   "('--' + boundary + '--')")
    if not reader.fields:
        raise FormError("empty", "the form has no fields")
    return nest(reader.fields)
