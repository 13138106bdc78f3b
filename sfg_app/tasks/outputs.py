"""What a task's inference blends, the files it writes and how they are read back.

A task holds one of these as ``task.outputs``; a task type whose files differ changes
one of them (``ClassOutputs`` for class labels; the plugin of
``tests/plugins/sfg_distance_task.py`` adds a file) and reuses the rest. The file
names themselves are `sfg_app.application.outputs`'; a task only chooses the kinds of
its files (`kinds`) and what they hold (`volumes`, `table_columns`). Numpy only.
"""

from __future__ import annotations

import numpy as np


class ValueOutputs:
    """One volume of values per subject for a voxel task, one table row of values per
    subject for an image-level task; in ``sample`` mode also the variance across the
    sampled architectures ("var"). ``interp_order``: how a volume is resampled back to
    the input's grid (`[TASK] output_interp_order`)."""

    #: The part of the task's ``decode`` that inference blends over the windows.
    inferred_output = "values"

    def __init__(self, task_name: str, interp_order: int = 1):
        self.task_name = task_name
        self.interp_order = interp_order

    def blended_output(self, *, resampled: bool, with_variance: bool) -> str:
        """What the blended volume holds (``values``, ``probabilities`` or ``labels``:
        see `sfg_app.data.aggregators`); ``resampled``: the subject's grid was
        resampled, so outputs go back through ``interp_order``."""
        return "values"

    def kinds(self, with_variance: bool) -> tuple[str, ...]:
        """The files written per subject of a voxel task, by kind: "" (the output),
        "var" (variance across sampled architectures, `sample` mode), and what a type
        adds (segmentation: "prob")."""
        return ("", "var") if with_variance else ("",)

    def volumes(self, blended: np.ndarray, output: str, undo) -> dict:
        """``{kind: (volume, dtype)}`` to write from the blended volume (``output`` says
        what it holds); ``undo(volume, order)`` takes a volume back to the input's grid.
        dtype None keeps the volume's."""
        return {"": (undo(blended, self.interp_order), np.float32)}

    def variance_volume(self, variance: np.ndarray) -> np.ndarray:
        """The "var" output, one volume per output channel, from the blended variance
        of ``inferred_output``."""
        return variance

    def table_columns(self, values: np.ndarray) -> tuple[list[str], list[float]]:
        """An image-level output's columns in its table: names and values."""
        return [f"{self.task_name}_{i}" for i in range(len(values))], list(values)

    def prediction_from_row(self, row: dict) -> np.ndarray:
        """The prediction written in a row of the table (``table_columns``)."""
        return np.array([float(value) for column, value in row.items()
                         if column.startswith(f"{self.task_name}_")
                         and not column.endswith("_var")])


class ClassOutputs(ValueOutputs):
    """Class labels: inference blends the probabilities and writes the labels (their
    argmax), and with ``save_probabilities`` the probabilities too ("prob")."""

    inferred_output = "probabilities"

    def __init__(self, task_name: str, interp_order: int = 1,
                 save_probabilities: bool = False):
        super().__init__(task_name, interp_order)
        self.save_probabilities = save_probabilities

    def blended_output(self, *, resampled: bool, with_variance: bool) -> str:
        """Labels straight into one integer volume, unless the probabilities are needed:
        to be written, for the variance, or to resample back before the argmax."""
        needed = (self.save_probabilities or with_variance
                  or (resampled and self.interp_order > 0))
        return "probabilities" if needed else "labels"

    def kinds(self, with_variance: bool) -> tuple[str, ...]:
        kinds = super().kinds(with_variance)
        return kinds[:1] + ("prob",) + kinds[1:] if self.save_probabilities else kinds

    def volumes(self, blended: np.ndarray, output: str, undo) -> dict:
        """The labels (int32), and the probabilities resampled back (float32)."""
        if output == "labels":
            return {"": (undo(blended, 0), None)}
        probabilities = undo(blended, self.interp_order)
        volumes = {"": (probabilities.argmax(axis=-1)[..., None].astype(np.int32), None)}
        if self.save_probabilities:
            volumes["prob"] = (probabilities, np.float32)
        return volumes

    def variance_volume(self, variance: np.ndarray) -> np.ndarray:
        """The probabilities' variance summed over the classes."""
        return variance.sum(axis=-1, keepdims=True)

    def table_columns(self, values: np.ndarray) -> tuple[list[str], list[float]]:
        """The probabilities, then ``label``, their argmax."""
        names, values = super().table_columns(values)
        return names + ["label"], values + [int(np.argmax(values))]

    def prediction_from_row(self, row: dict) -> np.ndarray:
        return np.array([float(row["label"])])
