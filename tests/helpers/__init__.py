"""Helpers shared by the tests: one module per concept, written once.

- `errors`: the Keras error-template assertion.
- `models`: the `.keras` round-trip check.
- `data`: tiny datasets on disk (wsolevaluation layouts, the embedded dataset).
- `wsol_reference`: an independent re-derivation of wsolevaluation's metrics.
- `maps`: random CAM-like score maps and GT boxes.
"""
