"""Helpers shared by the tests: one module per concept, written once.

- `errors`: the Keras error-template assertion.
"""
