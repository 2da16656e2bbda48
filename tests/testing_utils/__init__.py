"""Test-only builders (tiny models, synthetic MIMIC-CXR layouts); never part of the installed package."""
