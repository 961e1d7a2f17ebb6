"""The Ray tests' fixture: one real Ray cluster for the whole session (ray_cluster.py).

``ray_cluster`` (session scope) starts it the first time a test asks for it and stops it at
the end of the session; every Ray test shares it. Without ray the tests skip with a reason,
except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from ray_cluster import WORKER_PATHS, RayCluster, require_ray, start_cluster, stop_cluster

# The serving tests' model modules (tests/serving) import here too, for the 'thread' kind.
for _path in WORKER_PATHS[1:]:
    if str(_path) not in sys.path:
        sys.path.append(str(_path))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    require_ray()
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
