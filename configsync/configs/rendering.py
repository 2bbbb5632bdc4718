"""Render a config document as JSON, dotenv or YAML: the one place that does it.

dotenv output is read back to the same strings by a POSIX shell (`set -a; . ./file`) and by
python-dotenv. The two disagree on some characters, so each value gets the quoting both read
the same way:

- single quotes, when the value has no `'`, no backslash and no `${…}` (python-dotenv expands
  `${NAME}` even inside single quotes and decodes `\\` and `\'` there; a shell does neither);
- double quotes with `\\` and `\"` escaped, when the value has no `$` and no backtick (a shell
  expands those inside double quotes, and python-dotenv keeps `\\$` as two characters).

A value that fits neither (a `$` or backtick together with a `'`, a backslash or `${`) has no
form that both read alike; rendering refuses it and names the key, rather than hand out a file
that one of them reads differently. Non-string values are written as compact JSON (`30`,
`true`, `null`, `{"a":1}`).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from configsync.domain.documents import Document, documents_equal
from configsync.errors import InvalidInput
from configsync.http import dumps

# json: the envelope (version, updated_at, data); raw: the document alone, as JSON, under a
# media type of its own (JSON by its +json suffix, RFC 6839) so the two never share a schema.
FORMATS = ("json", "raw", "dotenv", "yaml")
RAW_MEDIA_TYPE = "application/vnd.configsync.document+json"
MEDIA_TYPES = {
    "json": "application/json",
    "raw": RAW_MEDIA_TYPE,
    "dotenv": "text/plain; charset=utf-8",
    "yaml": "application/yaml",
}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTENV_INTERPOLATION = re.compile(r"\$\{[^}]*\}")


class NotRenderable(InvalidInput):
    pass


def render(document: Document, fmt: str) -> bytes:
    if fmt in ("json", "raw"):
        return dumps(document)
    if fmt == "dotenv":
        return render_dotenv(document).encode("utf-8")
    if fmt == "yaml":
        return render_yaml(document).encode("utf-8")
    raise InvalidInput(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def dotenv_string(value: Any) -> str:
    """The string an environment variable holds for a document value."""
    if isinstance(value, str):
        return value
    return dumps(value).decode("utf-8")


def quote_dotenv(text: str) -> str | None:
    """`text` quoted so a shell and python-dotenv read it back alike; None if nothing can."""
    if "'" not in text and "\\" not in text and not _DOTENV_INTERPOLATION.search(text):
        return f"'{text}'"
    if "$" not in text and "`" not in text:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return None


def render_dotenv(document: Document) -> str:
    bad_names = [key for key in document if not ENV_NAME.fullmatch(key)]
    if bad_names:
        raise NotRenderable(
            "cannot render as dotenv: these keys are not environment variable names "
            f"([A-Za-z_][A-Za-z0-9_]*): {', '.join(map(repr, bad_names[:10]))}; use format=json"
        )
    lines = []
    unquotable = []
    for key, value in document.items():
        quoted = quote_dotenv(dotenv_string(value))
        if quoted is None:
            unquotable.append(key)
        else:
            lines.append(f"{key}={quoted}\n")
    if unquotable:
        raise NotRenderable(
            "cannot render as dotenv: the values of "
            f"{', '.join(map(repr, unquotable[:10]))} mix '$' or '`' with a quote, a backslash "
            "or '${', which no dotenv quoting reads back the same in a shell and in "
            "python-dotenv; use format=json"
        )
    return "".join(lines)


def render_yaml(document: Document) -> str:
    """YAML that loads back to exactly `document`.

    Readable UTF-8 first; but PyYAML writes some characters (U+0085, U+2028, U+2029) raw where
    its own reader takes them for line breaks, so the output is checked and, if it would not
    read back the same, written again with every non-ASCII character escaped.
    """
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False, default_flow_style=False)
    try:
        if documents_equal(yaml.safe_load(text), document):
            return text
    except (yaml.YAMLError, InvalidInput):
        pass
    return yaml.safe_dump(document, allow_unicode=False, sort_keys=False, default_flow_style=False)
