"""The WebSocket side: wire format, change-of-value filters, auth, limits, the protocol, the fan-out, web resources."""
