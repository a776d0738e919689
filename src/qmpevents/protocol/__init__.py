"""Sans-IO QMP: JSON stream framing, message codec and session state machines."""
