"""Trains the regression application in a fresh process, as `sfg_train` would.

usage: run_training.py MODEL_DIR MAX_ITER
Prints `RESULT first=... iteration=...` when training ends; on SIGTERM, prints the
TrainingStopped message and exits with 143, as the command-line layer does.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from regression_app import RegressionApplication, plan  # noqa: E402

from sfg_app.engine.training import TrainingDriver  # noqa: E402
from sfg_app.errors import TrainingStopped  # noqa: E402


def main(model_dir: str, max_iter: int) -> int:
    run_plan = plan(None, model_dir=model_dir, max_iter=max_iter, save_every_n=10)
    try:
        state = TrainingDriver(RegressionApplication(lr=0.01), run_plan).run()
    except TrainingStopped as stopped:
        print(f"STOPPED {stopped}", flush=True)
        return 143
    print(f"RESULT first={state.first_iteration} iteration={state.iteration}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
