"""Evaluation of predictions against targets, and the report of the learned grouping.

numpy, scipy, pyyaml and matplotlib (Agg) only: no deep-learning framework, so the
``sfg_eval`` and ``sfg_groups`` commands run without one.
"""
