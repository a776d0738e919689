"""qmpevents: the QEMU Machine Protocol event system, both ends of the wire.

Import from the subpackages: ``qmpevents.client`` (consume), ``qmpevents.server``
(emit), ``qmpevents.sim`` (simulate), ``qmpevents.collect`` (collect), and the
core below them, ``qmpevents.schema``, ``qmpevents.protocol``,
``qmpevents.throttle``. This top level imports none of them, so that no layer
depends on everything; the version is the installed distribution's
(``importlib.metadata.version("qmpevents")``).
"""
