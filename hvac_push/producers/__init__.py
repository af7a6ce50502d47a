"""Data sources: each runs in its own thread and hands samples to the reactor."""
