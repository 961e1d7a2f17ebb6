"""The processes a running pipeline is made of, and its supervision tree (internal)."""
