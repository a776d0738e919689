"""What a test sees of a libvirt domain's QMP events: through virsh and through qmpevents.

The issue's promise is that every event flow is seen both ways: by ``virsh
qemu-monitor-event`` (libvirt's own client) and by ``qmpevents watch
qemu:///system?domain=NAME``. :class:`Seen` runs both and checks that they
agree on every event a test waits for.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from tests.libvirt.host import URI

__all__ = ["WAIT", "Events", "Seen", "Watch"]

WAIT = 60.0


class Events:
    """The QMP events of a domain, as ``virsh qemu-monitor-event`` prints them."""

    def __init__(self, name: str) -> None:
        self._process = subprocess.Popen(
            ["virsh", "-q", "-c", URI, "qemu-monitor-event", "--domain", name, "--loop"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.5)  # virsh registers for the events before we act

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.strip())

    def next_names(self, count: int) -> list[str]:
        """The names of the next ``count`` events (``event NAME for domain ...: DATA``)."""
        names = []
        for _ in range(count):
            line = self._lines.get(timeout=WAIT)
            names.append(line.split()[1] + (" " + line.split(": ", 1)[1] if ": {" in line else ""))
        return names

    def until(self, *names: str) -> list[str]:
        """Event names up to the one of each of ``names`` in turn."""
        seen: list[str] = []
        for wanted in names:
            while True:
                try:
                    line = self._lines.get(timeout=WAIT)
                except queue.Empty:
                    raise AssertionError(f"virsh showed only {seen}") from None
                seen.append(line.split()[1])
                if seen[-1] == wanted:
                    break
        return seen

    def close(self) -> None:
        self._process.kill()
        self._process.wait(WAIT)


class Watch:
    """``qmpevents watch`` of one domain (with ``options``), its output read as it comes."""

    def __init__(self, name: str, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from qmpevents.cli import main; main()", "watch",
             f"{URI}?domain={name}", *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stderr is not None and self.process.stdout is not None
        self._lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        for _ in range(2):  # connected to libvirtd, and the domain attached
            self.errors.append(self.process.stderr.readline())
        for stream, sink in ((self.process.stdout, self._lines.put), (self.process.stderr, None)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    def _read(self, stream: IO[str], sink: Callable[[str], None] | None) -> None:
        for line in stream:
            if sink is not None:
                sink(line.strip())
            else:
                self.errors.append(line)

    def _next_line(self, seen: list[str]) -> str:
        try:
            return self._lines.get(timeout=WAIT)
        except queue.Empty:
            message = f"qmpevents watch showed only {seen}; stderr {self.errors}"
            raise AssertionError(message) from None

    def until(self, *names: str) -> list[str]:
        """Event lines up to the one of each of ``names`` in turn (``HH:MM:SS vm NAME ...``)."""
        lines: list[str] = []
        for wanted in names:
            while True:
                line = self._next_line(lines)
                lines.append(line)
                if line.split()[2:3] == [wanted]:
                    break
        return lines

    def next_names(self, count: int) -> list[str]:
        """The names of the next ``count`` events, past the markers of gaps and drops."""
        names: list[str] = []
        while len(names) < count:
            word = self._next_line(names).split()[2]
            if not word.startswith("--"):
                names.append(word)
        return names

    def close(self) -> None:
        self.process.kill()
        self.process.wait(WAIT)


class Seen:
    """A domain's events through virsh and through ``qmpevents watch``, checked to agree."""

    def __init__(self, name: str) -> None:
        self.virsh = Events(name)
        try:
            self.watch = Watch(name, "--reconnect")
        except BaseException:
            self.virsh.close()
            raise

    def next_names(self, count: int) -> list[str]:
        """virsh's next ``count`` events (``NAME DATA``), once watch has shown the same names."""
        names = self.virsh.next_names(count)
        assert self.watch.next_names(count) == [name.split(" ", 1)[0] for name in names]
        return names

    def until(self, *names: str) -> list[str]:
        """watch's event lines up to each of ``names`` in turn, once virsh showed the same."""
        lines = self.watch.until(*names)
        assert self.virsh.until(*names) == [line.split()[2] for line in lines]
        return lines

    def close(self) -> None:
        self.virsh.close()
        self.watch.close()
