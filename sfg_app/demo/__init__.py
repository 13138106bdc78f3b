"""The demo data: pelvic MR/CT phantoms with labels, generated from a seed.

Apart from the data pipeline, which never needs it: the embedded data set
(`scripts/make_phantoms.py`), the tests and the benchmarks draw subjects from here, and
the tests and the benchmarks build the configs of their runs on them with `configs.py`.
"""
