"""The runtime every service runs on: the at-least-once bus, the service app, Kafka helpers."""
