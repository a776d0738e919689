"""asyncio transports: the QMP server, the client and their stream glue."""
