"""The text of a libvirt target: ``qemu:///system``, optionally ``?domain=NAME``.

Any libvirt QEMU URI is a target: ``qemu:///system``, ``qemu:///session``,
``qemu+ssh://root@host/system``, ``qemu+unix:///system?socket=/path`` and the
like. Our one query member, ``domain=NAME``, picks a single domain and is taken
out before the URI is handed to libvirt; libvirt's own members stay.

Nothing here imports libvirt: a target is checked before anything connects,
and the extra that provides libvirt is only needed to use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from qmpevents.errors import ConfigError

__all__ = ["LIBVIRT_EXTRA_HINT", "LibvirtTarget", "is_libvirt_target", "parse_libvirt_target"]

LIBVIRT_EXTRA_HINT = (
    "libvirt targets need libvirt-python: pip install 'qmpevents[libvirt]'"
    " (it builds against libvirt-dev, with pkg-config and gcc)"
)


def is_libvirt_target(text: str) -> bool:
    """Whether ``text`` is a libvirt QEMU URI (``qemu://...`` or ``qemu+TRANSPORT://...``)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and (scheme == "qemu" or scheme.startswith("qemu+"))


@dataclass(frozen=True, slots=True)
class LibvirtTarget:
    """A libvirt connection URI and, if one was named, the one domain to follow."""

    uri: str
    domain: str | None = None

    @property
    def text(self) -> str:
        """The target as a user writes it."""
        if self.domain is None:
            return self.uri
        joiner = "&" if "?" in self.uri else "?"
        return f"{self.uri}{joiner}{urlencode({'domain': self.domain})}"

    def wants(self, domain: str) -> bool:
        """Whether events of ``domain`` belong to this target."""
        return self.domain is None or domain == self.domain


def parse_libvirt_target(text: str) -> LibvirtTarget:
    """The :class:`LibvirtTarget` of ``text``; ``ConfigError`` names what is wrong."""
    if not is_libvirt_target(text):
        raise ConfigError(f"{text!r}: not a libvirt URI (expected qemu:///system or qemu+...://)")
    parts = urlsplit(text)
    if not parts.path.strip("/"):
        raise ConfigError(
            f"{text!r}: a libvirt URI needs a path: qemu:///system or qemu:///session"
        )
    try:
        members = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as error:
        raise ConfigError(f"{text!r}: bad query string: {error}") from None
    domains = [value for key, value in members if key == "domain"]
    if len(domains) > 1:
        raise ConfigError(f"{text!r}: domain= given {len(domains)} times; give one")
    if domains and not domains[0]:
        raise ConfigError(f"{text!r}: domain= is empty; name a domain or leave it out")
    # libvirt's own members are passed on as the user wrote them.
    kept = "&".join(part for part in parts.query.split("&") if part.partition("=")[0] != "domain")
    # Rebuilt by hand: urlunsplit() would turn qemu:///system into qemu:/system.
    uri = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{kept}" if kept else "")
    return LibvirtTarget(uri, domains[0] if domains else None)
