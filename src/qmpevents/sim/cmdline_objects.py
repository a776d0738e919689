"""``-object`` of the ``qmpevents-qemu`` command line, as QEMU 7.2 reads it.

Two object types are simulated: ``memory-backend-ram`` (the memory of NUMA
nodes and DIMMs) and ``secret`` (libvirt's master key: read, decoded and kept,
as QEMU keeps it for whatever later needs it). Both syntaxes are taken, each
checked as QEMU checks it: a JSON value by its JSON type (``"size": "1M"``:
"Parameter 'size' expects uint64"), a ``key=value`` one by parsing its text.
A type QEMU has but the simulator does not is refused by name; an unknown one
gets QEMU's "Parameter 'qom-type' does not accept value". Errors QEMU reports
once the object is complete (a secret file that cannot be read) carry no
option prefix (:class:`~qmpevents.sim.cmdline_host.LateError`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

from qmpevents.sim.cmdline_host import LateError
from qmpevents.sim.config import MachineConfig
from qmpevents.sim.opts import OptionError, parse_bool, parse_size, parse_tree

__all__ = ["ObjectOptions"]

_BACKEND_BOOLS: Final = ("share", "prealloc", "merge", "dump", "reserve")
# ObjectType values QEMU 7.2 knows beyond those simulated (the rest: "does not accept").
_OTHER_OBJECT_TYPES: Final = frozenset({
    "authz-list", "authz-listfile", "authz-pam", "authz-simple", "can-bus",
    "can-host-socketcan", "colo-compare", "cryptodev-backend", "cryptodev-backend-builtin",
    "cryptodev-vhost-user", "dbus-vmstate", "filter-buffer", "filter-dump", "filter-mirror",
    "filter-redirector", "filter-replay", "filter-rewriter", "input-barrier", "input-linux",
    "iothread", "main-loop", "memory-backend-epc", "memory-backend-file",
    "memory-backend-memfd", "pef-guest", "pr-manager-helper", "qtest", "rng-builtin",
    "rng-egd", "rng-random", "s390-pv-guest", "secret_keyring", "sev-guest", "thread-context",
    "throttle-group", "tls-cipher-suites", "tls-creds-anon", "tls-creds-psk",
    "tls-creds-x509", "x-remote-object", "x-vfio-user-server",
})  # fmt: skip


class ObjectOptions:
    """The reader of ``-object`` for one command line, filling ``config``.

    ``memdevs`` maps each memory backend to its size; ``busy_memdevs`` holds
    those a NUMA node or a DIMM took.
    """

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self.memdevs: dict[str, int] = {}
        self.busy_memdevs: set[str] = set()
        self._object_ids: set[str] = set()

    def object(self, value: str) -> None:
        """Read one ``-object`` (OptionError, or LateError once it is complete)."""
        from_json = value.lstrip().startswith("{")
        tree = parse_tree(value, "qom-type")
        qom_type = tree.pop("qom-type", None)
        if qom_type is None:
            raise OptionError("Parameter 'qom-type' is missing")
        if qom_type in _OTHER_OBJECT_TYPES:
            raise OptionError(f"qmpevents-qemu does not simulate qom-type '{qom_type}'")
        if qom_type not in ("memory-backend-ram", "secret"):
            raise OptionError(f"Parameter 'qom-type' does not accept value '{qom_type}'")
        object_id = tree.get("id")
        if object_id is None:
            raise OptionError("Parameter 'id' is missing")
        if not isinstance(object_id, str):
            raise OptionError("Invalid parameter type for 'id', expected: string")
        if qom_type == "memory-backend-ram":
            self.memdevs[object_id] = self._memory_backend(tree, from_json)
        else:
            self.config.secrets[object_id] = self._secret(tree, from_json)
        if object_id in self._object_ids:
            raise OptionError(f"Duplicate ID '{object_id}' for object")
        self._object_ids.add(object_id)
        self.config.objects.append((qom_type, object_id))

    def _unexpected(self, key: str, from_json: bool) -> OptionError:
        return OptionError(
            f"Parameter '{key}' is unexpected" if from_json else f"Invalid parameter '{key}'"
        )

    def _memory_backend(self, tree: dict[str, Any], from_json: bool) -> int:
        for key, item in tree.items():
            if key in _BACKEND_BOOLS:
                _check_bool("memory-backend-ram", key, "bool", item, from_json)
            elif key in ("host-nodes", "policy", "prealloc-threads", "prealloc-context"):
                raise OptionError(f"qmpevents-qemu does not simulate memory backend '{key}'")
            elif key not in ("id", "size", "x-use-canonical-path-for-ramblock-id"):
                raise self._unexpected(key, from_json)
        if "size" not in tree:
            raise LateError("can't create backend with size 0")
        size = tree["size"]
        if from_json:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise OptionError("Parameter 'size' expects uint64")
            return size
        try:
            return parse_size(str(size), "", name="size")
        except OptionError:
            raise OptionError("Parameter 'size' expects a size value") from None

    def _secret(self, tree: dict[str, Any], from_json: bool) -> bytes:
        for key, item in tree.items():
            if key in ("keyid", "iv"):
                raise OptionError("qmpevents-qemu does not simulate encrypted secrets")
            if key not in ("id", "format", "file", "data"):
                raise self._unexpected(key, from_json)
            if from_json and not isinstance(item, str):
                raise OptionError(f"Invalid parameter type for '{key}', expected: string")
        fmt = tree.get("format", "raw")
        if fmt not in ("raw", "base64"):
            raise OptionError(f"Parameter 'format' does not accept value '{fmt}'")
        if "file" in tree and "data" in tree:
            raise LateError("'file' and 'data' are mutually exclusive")
        if "file" in tree:
            path = str(tree["file"])
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as error:
                raise LateError(
                    f"Unable to read {path}: Failed to open file \u201c{path}\u201d: "
                    f"{error.strerror}"
                ) from None
        elif "data" in tree:
            data = str(tree["data"]).encode()
        else:
            raise LateError("Either 'file' or 'data' must be provided")
        if fmt == "base64":
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise LateError("Base64 data contains invalid characters") from None
        return data


def _check_bool(driver: str, key: str, kind: str, value: Any, from_json: bool) -> bool:
    if not from_json:
        return parse_bool(str(value), key)
    if not isinstance(value, bool):
        raise OptionError(f"Invalid parameter type for '{key}', expected: boolean")
    return value
