"""Collecting events from many VMs into SQLite, NATS JetStream and Prometheus."""
