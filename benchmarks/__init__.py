"""Benchmarks of the system against a plain script, run on this machine: `make benchmark`."""
