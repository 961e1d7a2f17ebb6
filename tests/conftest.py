pytest_plugins = ["corral.testing.pytest_plugin"]
