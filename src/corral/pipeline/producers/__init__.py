"""Producers shipped with corral, one module each, imported only when a pipeline names one:

- ``memory`` (``corral.pipeline.producers.memory``): an in-memory queue, for tests and demos.
"""
