"""The WebSocket gateway: relays Redis Pub/Sub events to connected clients.

See docs/gateway.md.
"""
