"""Dask as a ZenML stack component: `flavor.py` is import-light, `engine.py` imports distributed lazily."""
