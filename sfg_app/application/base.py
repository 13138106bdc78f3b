"""The hooks an application fills in: what a run computes.

The engine's drivers call these hooks and own everything about how they run (devices,
the loop, checkpoints, logging). An application keeps no global state: two
applications can live in one process (tests do it).
"""

from __future__ import annotations


class Application:
    """Base class of the applications named by `[SYSTEM] application`."""

    def __init__(self, settings, inputs=None):
        """`inputs`: image files to infer (`sfg_infer --input`) instead of the subjects of
        the config's split; what the application computes follows from these arguments
        alone, never from the order of its hooks' calls."""
        self.settings = settings
        self.inputs = inputs

    # -- built under the driver's distribution strategy and dtype policy ------------
    def build_network(self):
        """The Keras model, built (its variables exist) for the images' channels: those of
        the `inputs` files when given, else of the config's data."""
        raise NotImplementedError

    def build_objective(self):
        """A Keras layer holding the objective's own learned weights (may have none)."""
        raise NotImplementedError

    def build_optimiser(self):
        raise NotImplementedError

    # -- data -------------------------------------------------------------------------
    def training_dataset(self, batch_size: int, first_window: int, shard_index: int = 0,
                         shard_count: int = 1):
        """An endless `tf.data.Dataset` of batches of `batch_size` windows.

        Windows are numbered from the start of training; this dataset yields windows
        `first_window + shard_index + k * shard_count`, k = 0, 1, ..., so that a resumed
        run continues the sequence and input pipelines of a distributed run draw
        disjoint windows, each deterministic for the seed.
        """
        raise NotImplementedError

    def has_validation_data(self) -> bool:
        """Whether `validation_dataset` has anything to give (checked before building it)."""
        return False

    def validation_dataset(self, batch_size: int, shard_index: int = 0, shard_count: int = 1):
        """A finite dataset of fixed validation batches."""
        raise NotImplementedError

    def close(self) -> None:
        """Release data workers and files; the drivers call it when a run ends."""

    # -- the computation (traced into the driver's step functions) ---------------------
    def network_inputs(self, batch):
        """The network's input tensor from a batch."""
        raise NotImplementedError

    def compute_loss(self, model, objective, outputs, batch):
        """`(total, logs)`: the scalar to minimise and named scalars to log."""
        raise NotImplementedError

    def balanced_variables(self, model) -> list:
        """Variables whose gradient the training step builds from each task's gradient
        scaled to a common size (the grouping logits with `[SFG] logit_gradient =
        balanced`); none by default."""
        return []

    def loss_parts(self, model, objective, outputs, batch):
        """`(total, logs, (terms, regulariser))`: as `compute_loss`, with the total's
        parts: `{task: its weighted loss}` and what no task owns (the grouping's KL,
        weight decay); they sum to the total. Training with balanced logit gradients
        differentiates each part alone."""
        raise NotImplementedError

    def summary_images(self, batch, outputs) -> dict:
        """`{name: (N, H, W, 1) images in [0, 1]}` of a batch and its outputs, for
        TensorBoard; none by default."""
        return {}

    def group_names(self) -> list[str]:
        """Names of the SFG groups, in the network's order."""
        return []

    # -- the network's state (called by the drivers outside their traced steps) ----------
    def set_architecture(self, model, mode: str) -> None:
        """Run `model` in architecture `mode` from now on: `train`, or one of the test-time
        architectures `map`, `sample`, `expected`; a network without architectures (the
        default) runs as it is."""

    def grouping_probabilities(self, model) -> dict:
        """`{layer: (kernels, groups) numpy}` of the network's SFG layers; none by default."""
        return {}

    def probe_iterations(self, model) -> int:
        """Training steps that measure the tasks' agreement on the network's grouped
        kernels before its groups are decided (``[SFG] allocation = agreement``); then
        the driver calls the network's ``grouped_kernels``, ``record_gradients`` and
        ``allocate_groups``. None by default."""
        return 0

    def summary_scalars(self, model) -> dict:
        """`{name: float}` of the network's own state to log beside the losses; none by
        default."""
        return {}

    # -- inference and evaluation -------------------------------------------------------
    def decode_outputs(self, outputs):
        """What inference blends, per task of `outputs` (traced into the driver's
        predict function)."""
        raise NotImplementedError

    def check_exported_network(self, model, path: str, architecture: str) -> None:
        """An SFGError naming `path` when the exported network `model` cannot stand in
        for the config's network."""
        raise NotImplementedError

    def inference_files(self) -> list:
        """The subjects to infer (`SubjectFiles`): the config's split, or the `inputs`
        files."""
        raise NotImplementedError

    def check_outputs(self, subjects: list, output_dir: str, overwrite: bool,
                      tasks=None) -> list[str]:
        """Before any work: the paths inference will write; an error naming those that
        exist already, unless `overwrite`."""
        raise NotImplementedError

    def inference_subjects(self, subjects: list, output_dir=None, tasks=None):
        """One object per subject with `batches()` (the network inputs and their
        locations, as many windows per call as the application chose for the subject),
        `add(mean, variance, locations)` and `write() -> paths`, for the inference
        driver."""
        raise NotImplementedError

    def evaluate_outputs(self, output_dir: str) -> list[dict]:
        """`{"subject", "task", metric: value}` rows of the written outputs."""
        raise NotImplementedError
