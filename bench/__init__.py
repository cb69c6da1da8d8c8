"""Benchmarks, run on demand (`make bench`), never inside `make test`."""
