"""sfg: config-driven multi-task learning with Stochastic Filter Groups.

Importing the package turns TensorFlow's oneDNN CPU kernels on before TensorFlow is
imported (see ``sfg_app.runtime``).
"""

from sfg_app import runtime  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS first)

__version__ = "0.1.0"
