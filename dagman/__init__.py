"""DAGMaN: attention-guided masked image modelling with a noisy teacher for 3D CT.

The package is layered (no module imports upward): ``io`` -> ``cohorts`` -> ``models`` -> ``ssl`` ->
``tasks`` -> ``report`` -> ``cli``.
"""

__version__ = "0.1.0"
