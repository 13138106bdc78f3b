"""Test-wide environment: the Keras backend and home are set before anything imports Keras."""

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["KERAS_HOME"] = str(pathlib.Path(__file__).resolve().parent.parent / ".keras_home")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
