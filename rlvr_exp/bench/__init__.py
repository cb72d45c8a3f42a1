"""Benchmarks (not tests): ``python -m rlvr_exp.bench.<name>``; each prints its own table."""
