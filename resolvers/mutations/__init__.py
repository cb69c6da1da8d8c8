"""Mutations, one module per domain; resolvers/root composes them."""
