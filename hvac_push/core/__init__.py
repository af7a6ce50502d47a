"""The core: point and value types, the hub, its followers and the publisher. Knows no sockets and no plant."""
