"""corral's loggers live under ``corral``; as a library it adds no handler of its own
beyond a ``NullHandler``, so crash reports reach whatever logging the application sets up
and nothing is printed when it sets up none."""

import logging

logging.getLogger("corral").addHandler(logging.NullHandler())
