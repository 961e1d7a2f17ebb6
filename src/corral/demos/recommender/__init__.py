"""``corral demo``: the seed's real-time recommender, end to end, on MovieLens 100K.

Data source -> pipeline -> model -> orchestrator -> client (the seed's hybrid architecture):
``data`` loads MovieLens from the installed recbole package, ``model`` is the implicit
matrix factorization trained by ``corral.train`` and served on port partitions, ``stream``
holds the pipeline and the per-user ``RecommendationSystem`` process, ``demo`` runs it all
and ``table`` prints the result.
"""

from corral.demos.recommender.demo import DemoOptions, DemoResult, run_recommender_demo
from corral.demos.recommender.table import render

__all__ = ["DemoOptions", "DemoResult", "render", "run_recommender_demo"]
