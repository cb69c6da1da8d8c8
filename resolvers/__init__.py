"""Thin resolvers: authorize, call a service, return schema types. DataLoaders per request.
root.py composes the Schema (Query, the mutations, Subscription, limits and extensions)."""
