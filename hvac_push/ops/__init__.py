"""Running it: the service assembly, twistd options, metrics, health, logs, the plant file, cluster links."""
