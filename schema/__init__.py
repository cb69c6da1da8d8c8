"""Strawberry types, inputs, enums, payloads and field permissions.

resolvers/root.py composes the Schema from these types and the resolvers."""
