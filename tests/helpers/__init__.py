"""Helpers shared by the tests: one module per concept, written once.

- `errors`: the Keras error-template assertion.
- `models`: the `.keras` round-trip check.
"""
