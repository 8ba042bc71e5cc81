"""Operators' tools: doctor, backup and restore, the demo, systemd notify. Only the CLI imports it."""
