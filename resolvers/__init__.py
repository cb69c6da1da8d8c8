"""Thin resolvers: authorize, call a service, return schema types. DataLoaders per request."""
