"""Strawberry types, inputs, enums and payloads; schema/root.py composes the Schema."""
