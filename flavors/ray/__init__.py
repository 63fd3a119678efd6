"""Ray engine flavor (see flavor.py for config and settings, engine.py for the lifecycle)."""
