"""A simulated QEMU that raises QMP events for the same reasons as QEMU."""
