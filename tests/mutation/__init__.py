"""A rerunnable mutation check: plant one known bug at a time in a temporary copy of the tree and run the tests that
should catch it. `python -m tests.mutation --help`; the catalogue is `tests/mutation/catalogue.py`, the method and
the last report are in docs/testing.md."""
