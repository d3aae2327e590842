"""Performance benchmarks of IVT on the machine at hand (`python -m bench`; see bench/run.py)."""
