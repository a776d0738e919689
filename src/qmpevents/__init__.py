"""qmpevents: the QEMU Machine Protocol event system, both ends of the wire.

Import from the subpackages (``qmpevents.schema``, ``qmpevents.protocol``,
``qmpevents.throttle``, ``qmpevents.aio``, ...); this top level only carries the
version, so that no layer depends on everything.
"""

__version__ = "0.1.0"
