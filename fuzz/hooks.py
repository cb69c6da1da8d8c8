"""What schemathesis loads through SCHEMATHESIS_HOOKS=fuzz.hooks: Portico's checks and the
hostile scalar values."""

from fuzz import checks, strategies

strategies.register()
__all__ = ["checks"]
