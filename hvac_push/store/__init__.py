"""Durable storage: trends with rollups, the alarm journal and the hub's last values (docs/operations.md)."""
