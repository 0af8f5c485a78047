"""The cdef must match the public header: cffi silently converts mis-declared widths."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADER = (ROOT / "csrc" / "include" / "edgetelemetry.h").read_text()
CDEF = (ROOT / "edgetelemetry" / "_native" / "core_cdef.h").read_text()


def _strip(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"\bET_API\s+", "", text)
    return text


def _functions(text: str) -> dict[str, str]:
    out = {}
    for m in re.finditer(r"^([a-z][\w \*]*?\b)(et_\w+)\s*\(([^;{]*?)\)\s*;", _strip(text), re.M):
        ret, name, args = m.groups()
        out[name] = " ".join(f"{ret} ({args})".replace("*", " * ").split())
    return out


def _struct_fields(text: str, name: str) -> list[str]:
    body = re.search(rf"typedef struct {name} \{{(.*?)\}} {name};", _strip(text), re.S)
    assert body, name
    fields = []
    for decl in body.group(1).split(";"):
        decl = " ".join(decl.split())
        if not decl or decl == "...":
            continue
        kind, _, names = decl.partition(" ")
        if kind in ("const", "unsigned"):
            more, _, names = names.partition(" ")
            kind = f"{kind} {more}"
        for n in names.split(","):
            field = re.sub(r"\[.*\]", "[]", n.strip())
            fields.append(f"{kind} {field}")
    return fields


def test_every_function_is_declared_identically() -> None:
    header, cdef = _functions(HEADER), _functions(CDEF)
    public = {n for n in header if n != "et_api_table"} | {"et_api_table"}
    assert set(cdef) == public
    for name, signature in cdef.items():
        assert signature == header[name], name


def test_struct_layouts_match() -> None:
    for struct in ("et_config", "et_info", "et_series_stats", "et_shared_options",
                   "et_shared_info", "et_segment_info"):
        assert _struct_fields(CDEF, struct) == _struct_fields(HEADER, struct), struct


def test_every_header_constant_is_declared() -> None:
    defined = set(re.findall(r"#define (ET_[A-Z_]+)\s+\S", HEADER))
    skip = {"ET_API", "ET_VERSION_MAJOR", "ET_VERSION_MINOR", "ET_VERSION_PATCH"}
    declared = set(re.findall(r"#define (ET_[A-Z_]+) \.\.\.", CDEF))
    assert declared == defined - skip
