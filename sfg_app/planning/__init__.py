"""``sfg_plan``: a complete, commented config from a minimal one and the data it names.

`request` reads the minimal config, `fingerprint` the data (headers, then a bounded
sample of voxels), `rules` turns the fingerprint into planned values with their reasons,
`writing` writes the config and the fingerprint's table, `planner` runs them in order.
Nothing here imports TensorFlow or Keras (docs/planning.md).
"""
