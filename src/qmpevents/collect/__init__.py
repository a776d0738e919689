"""Collecting events from many VMs into SQLite, NATS JetStream and Prometheus.

- :mod:`.collector`: :class:`Collector`, everything below put together; :mod:`.config`
  its settings (TOML and command line), :mod:`.discovery` the VMs to attach
  (targets, a watched directory), :mod:`.endpoints` one connection per VM.
- :mod:`.records`: :class:`EventRecord` and :class:`GapRecord`, what is recorded.
- :mod:`.fanout`: :class:`Fanout`, what the per-VM connections call; it feeds the
  sinks and the metrics and tracks each VM's open gap.
- :mod:`.sink`: the :class:`Sink` protocol; :mod:`.buffer` the bounded,
  drop-counting buffer every sink keeps.
- :mod:`.sqlite_store` (with :mod:`.sqlite_schema`): the SQLite history, the default;
  :mod:`.history` reads it back.
- :mod:`.nats_sink`: publishing to the ``QMP_EVENTS`` JetStream stream.
- :mod:`.metrics`: Prometheus metrics and their HTTP endpoint.
"""
