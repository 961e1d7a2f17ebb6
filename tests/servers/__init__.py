"""Real servers for the tests: start a server binary on a free loopback port, stop it after.

- ``servers.common``: the shared pieces (``require_binary``, ``free_port``,
  ``wait_accepting``, ``ServerProcess``).
- one module per server (``servers.redis``, ...): how to start it, and its pytest fixtures.

``servers.fixtures`` (a pytest plugin named in ``tests/conftest.py``) registers every server
module of this package as a plugin, so a session fixture defined in ``servers/<name>.py`` is
available to every test without further wiring. ``tests/`` is on ``sys.path`` through
``[tool.pytest.ini_options] pythonpath`` in pyproject.toml.
"""
