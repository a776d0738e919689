"""Typed QMP event models, validation, and validators built from a live QEMU schema."""
