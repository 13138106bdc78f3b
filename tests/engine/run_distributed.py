"""Runs the regression application under a distributed strategy in a fresh process.

usage: run_distributed.py mirrored|multi_worker MODEL_DIR
(multi_worker reads TF_CONFIG from the environment, as any TensorFlow worker does)
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from regression_app import RegressionApplication, plan  # noqa: E402

from sfg_app.engine.training import TrainingDriver  # noqa: E402


def main(strategy: str, model_dir: str) -> None:
    if strategy == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    run_plan = plan(None, model_dir=model_dir, strategy=strategy, max_iter=20,
                    validation_every_n=10)
    state = TrainingDriver(RegressionApplication(), run_plan).run()
    print(f"RESULT replicas={state.strategy.num_replicas_in_sync} "
          f"iteration={state.iteration} mse={state.logs['mse']:.6f} "
          f"val_mse={state.logs['val_mse']:.6f} chief={state.chief}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
