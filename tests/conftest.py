# servers.fixtures registers the real-server fixtures (tests/servers/); tests/ is on sys.path
# through pyproject's [tool.pytest.ini_options] pythonpath.
pytest_plugins = ["corral.testing.pytest_plugin", "servers.fixtures"]
