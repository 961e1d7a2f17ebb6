"""The HTTP front door: the Open Inference Protocol (KServe v2) over HTTP for servings.

``Gateway(servings, ...)`` is an inert value; ``gateway.child_spec()`` runs it as a
supervised process serving an ASGI app (Starlette) with uvicorn on the node's own loop, so a
request reaches ``serving.run_batch`` with no extra hop. Needs ``pip install 'corral[http]'``.
See docs/http.md.
"""

from corral.gateway.gateway import Gateway
from corral.gateway.options import GatewayOptions

__all__ = ["Gateway", "GatewayOptions"]
