"""Names from outside (VM names, event names) made safe for each place they go.

- :func:`safe_name`: a VM name as the collector keeps it everywhere (SQLite, NATS
  subject and headers, metric labels, status lines). A socket whose file name is not
  valid UTF-8 gets a name with surrogates from ``os.fsdecode``, which no UTF-8
  destination can take; each such byte becomes the four characters ``\\xNN``, as
  ``bytes.decode("utf-8", "backslashreplace")`` writes it (``b"vm\\xff.sock"`` is the
  VM ``vm\\xff``), and any other lone surrogate ``\\uNNNN``. Valid names are unchanged.
- :func:`escape_controls`: text for one line of a terminal or a log, with control
  characters (newline, CR, tab, ...) written as escapes, so a name never splits a line.
- :func:`percent_escape`: a value for a NATS header (``Qmp-Vm``): ``%``, control
  characters, every non-ASCII character and a space at either end become ``%XX`` (of
  UTF-8), so the header is plain ASCII that NATS clients neither strip nor fold;
  ``urllib.parse.unquote`` gives the name back.
"""

from __future__ import annotations

__all__ = ["escape_controls", "percent_escape", "safe_name"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _is_surrogate(ch: str) -> bool:
    return "\ud800" <= ch <= "\udfff"


def safe_name(name: str) -> str:
    """``name`` with its lone surrogates escaped (``\\xNN``): valid UTF-8 everywhere."""
    if not any(map(_is_surrogate, name)):
        return name
    return "".join(_escape_char(ch) if _is_surrogate(ch) else ch for ch in name)


def escape_controls(text: str) -> str:
    """``text`` on one line: each non-printable character as ``\\n``, ``\\xNN``, ``\\uNNNN``."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


def percent_escape(text: str) -> str:
    """``text`` as printable ASCII: see the module docstring; ``unquote`` reverses it."""
    if text.isascii() and text.isprintable() and "%" not in text and text.strip(" ") == text:
        return text  # the usual name: nothing to escape
    last = len(text) - 1
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch == "%" or not " " <= ch <= "~" or (ch == " " and i in (0, last)):
            out.extend(f"%{byte:02X}" for byte in ch.encode("utf-8", "surrogatepass"))
        else:
            out.append(ch)
    return "".join(out)
