"""The product's rules, free of GraphQL: called alike by the API, the CLI and the worker."""
