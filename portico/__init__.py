"""Portico: the wiring (settings, database, the ASGI app, the CLI)."""
