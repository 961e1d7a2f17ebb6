"""Demos that `corral demo` runs."""
