"""Many clients on one QMP socket: ``qmpevents proxy``.

- :mod:`.ids`: the proxy-unique request ids and the map back to each client's own id.
- :mod:`.messages`: the wire work (greeting, forwarded requests, relabelled replies).
- :mod:`.upstream`: the one connection to QEMU (greeting, negotiation, lines in).
- :mod:`.downstream`: one client connection (negotiation, ordering, output limit).
- :mod:`.listen`: the listening sockets (unix 0600, loopback-only TCP by default).
- :mod:`.recorder`: ``--record``, every message as a JSON line, bounded.
- :mod:`.server`: :class:`Proxy`, which ties them together and survives upstream loss.
"""

from qmpevents.proxy.recorder import Recorder
from qmpevents.proxy.server import Proxy, ProxyConfig

__all__ = ["Proxy", "ProxyConfig", "Recorder"]
