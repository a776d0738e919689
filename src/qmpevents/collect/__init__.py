"""Collecting events from many VMs into SQLite, NATS JetStream and Prometheus.

- :mod:`.collector`: :class:`Collector`, everything below put together; :mod:`.config`
  its settings (TOML and command line), :mod:`.discovery` the VMs to attach
  (targets, a watched directory), :mod:`.endpoints` one connection per VM.
- :mod:`.records`: :class:`EventRecord` and :class:`GapRecord`, what is recorded.
- :mod:`.fanout`: :class:`Fanout`, what the per-VM connections call; it feeds the
  sinks and the metrics and tracks each VM's open gap.
- :mod:`.sink`: the :class:`Sink` protocol; :mod:`.buffer` the bounded,
  drop-counting buffer every sink keeps; :mod:`.rejects` the records a sink can
  never store, set aside and counted.
- :mod:`.sqlite_store` (with :mod:`.sqlite_batches` and :mod:`.sqlite_schema`): the
  SQLite history, the default; :mod:`.history` reads it back.
- :mod:`.nats_outbox`: publishing to the ``QMP_EVENTS`` JetStream stream from the
  SQLite journal (:mod:`.outbox_journal`) behind a persistent cursor;
  :mod:`.nats_sink` publishes records handed over in memory instead (no journal);
  both publish with :mod:`.nats_publish` and :mod:`.nats_messages`.
- :mod:`.metrics`: Prometheus metrics and their HTTP endpoint; :mod:`.event_labels`
  bounds the event names used as labels.
- :mod:`.names`: VM names that are not UTF-8, control characters, header values.
"""
