"""``python -m corral.port MODULE:HANDLER``: run a port worker (see corral.port.worker)."""

from corral.port.worker import main

main()
