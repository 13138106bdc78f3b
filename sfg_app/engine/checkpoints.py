"""Checkpoints of a run, named by training iteration, in its run folder's checkpoints.

TensorFlow writes a checkpoint's data under a temporary name and renames it, then
rewrites the small `checkpoint` index file atomically, so a run killed while saving
leaves the previous checkpoint intact; a checkpoint damaged afterwards (a full disk, a
copy that did not finish) is skipped, with a warning, when the latest is restored.
Workers other than the chief write to a scratch folder that is deleted: every worker
must take part in a save, only one copy is kept.

A Keras layer or model is saved as the map of its variables by path (below its own
name), not through its own trackable children: TensorFlow's object tracking does not see
the layers a subclassed Keras 3 model keeps in lists or dicts, so a
`tf.train.Checkpoint(model=model)` of such a network held none of their weights (measured:
1 of 125 variables of an SFG-HighRes3DNet restored). Keys below the model's own name also
survive Keras' renaming of a second instance in one process (`sfg_high_res3d_net_1`).
TensorFlow's key of such a variable in the checkpoint's files is this module's to spell
(`saved_shapes` reads them back for the commands).

The states of the network's random streams (`random_states`: the architecture samples of
the SFG layers) are saved too, so that a resumed run draws what the uninterrupted run
would have drawn, instead of restarting every stream at the seed. Checkpoints written
before they were saved still restore; their runs resume with the streams at the seed.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import warnings

import keras
import tensorflow as tf

from sfg_app.errors import SFGWarning, TrainingError
from sfg_app.io.run_folder import RunFolder

CHECKPOINT_NAME = "ckpt"


def checkpoint_dir(model_dir: str) -> str:
    return str(RunFolder(model_dir).checkpoints)


class CheckpointStore:
    """Save and restore the trackable objects of a run by iteration number."""

    def __init__(self, model_dir: str, max_to_keep: int = 5, chief: bool = True,
                 optional: dict | None = None, **trackables):
        """`optional`: trackables saved like the others that a checkpoint may lack (older
        checkpoints written before they were saved), restored when it has them."""
        self.directory = checkpoint_dir(model_dir)
        self.chief = chief
        trackables = {name: variables_by_path(value) if isinstance(value, keras.layers.Layer)
                      else value for name, value in trackables.items()}
        optional = {name: value for name, value in (optional or {}).items() if value}
        self.checkpoint = tf.train.Checkpoint(**trackables, **optional)
        self._without_optional = (tf.train.Checkpoint(**trackables) if optional
                                  else self.checkpoint)
        self._optional = tuple(optional)
        target = self.directory if chief else tempfile.mkdtemp(prefix="sfg_worker_ckpt_")
        self._manager = tf.train.CheckpointManager(
            self.checkpoint, target, max_to_keep=max_to_keep, checkpoint_name=CHECKPOINT_NAME)

    def iterations(self) -> list[int]:
        """Iterations of the checkpoints on disk, oldest first."""
        return available_iterations(self.directory)

    def save(self, iteration: int) -> str:
        path = self._manager.save(checkpoint_number=int(iteration))
        if not self.chief:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        return path

    def path(self, iteration: int = -1) -> str:
        """The checkpoint of `iteration` (-1: the latest); a TrainingError if there is none."""
        return _checkpoint_path(self.directory, iteration)[0]

    def restore(self, iteration: int = -1, partial: bool = False) -> int:
        """Load the checkpoint of `iteration` (-1: the latest that can be read) and return
        the iteration it holds.

        `partial` allows a checkpoint with more objects than this store tracks (inference
        restores the network of a training checkpoint, not its optimiser).

        A checkpoint whose files were cut or damaged (a full disk, a copy that did not
        finish, a file system that lost a block) stops neither training nor inference when
        the latest is asked for: it is named in a warning and the next newest is tried.
        An iteration asked for by number is never replaced by another: its damage is a
        TrainingError. Falling back is safe: TensorFlow reads every tensor of a checkpoint
        before assigning any (measured for each kind of damage: no variable changed), and
        a restore that succeeds has assigned every variable this store tracks
        (`assert_existing_objects_matched`), so nothing of a failed attempt survives.
        """
        if iteration != -1:
            path, found = _checkpoint_path(self.directory, iteration)
            damage = self._restore_from(path, partial)
            if damage is not None:
                others = [i for i in available_iterations(self.directory) if i != found]
                raise TrainingError(
                    f"The checkpoint of iteration {found} cannot be read ({damage}): its "
                    "files were cut or damaged. Choose another iteration "
                    f"({', '.join(map(str, others)) or 'none left'}) in [TRAINING] "
                    "starting_iter or [INFERENCE] inference_iter, or -1 for the latest that "
                    f"can be read; or delete its files ({path}.*).")
            return found
        _checkpoint_path(self.directory, -1)  # a TrainingError when there is none
        skipped = []
        for found in reversed(available_iterations(self.directory)):
            damage = self._restore_from(_prefix(self.directory, found), partial)
            if damage is None:
                return found
            skipped.append(f"iteration {found} ({damage})")
            warnings.warn(f"The checkpoint of iteration {found} cannot be read and is "
                          f"skipped ({damage}); trying the one before it.", SFGWarning,
                          stacklevel=2)
        raise TrainingError(
            f"No checkpoint in {self.directory} can be read: {'; '.join(skipped)}. Their "
            "files were cut or damaged (a full disk, a copy that did not finish). To train "
            f"afresh, delete {self.directory} or point [SYSTEM] model_dir at a new folder "
            "(the training so far is lost); to use another trained run, point [SYSTEM] "
            "model_dir at its folder.")

    def _restore_from(self, path: str, partial: bool) -> str | None:
        """Restore `path`; None when it worked, what is damaged when its files cannot be
        read, a TrainingError when they can but do not fit the tracked objects.

        TensorFlow's exception does not say which of the two happened (a cut data file
        raises IndexError, a cut or overwritten index a bare OpError, a damaged tensor
        DataLossError, a mismatch AssertionError, ValueError or InvalidArgumentError), so
        a failed restore is followed by reading every tensor of the checkpoint: the
        checkpoint is damaged exactly when that fails.
        """
        try:
            checkpoint = self.checkpoint
            if self._optional:
                saved = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(path)}
                if not saved.issuperset(self._optional):
                    checkpoint = self._without_optional
            status = checkpoint.restore(path)
            if partial:
                status.expect_partial()
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError, IndexError, tf.errors.OpError) as error:
            damage = unreadable(path)
            if damage is not None:
                return damage
            # A variable missing, its shape, or its dtype (an optimiser saved by position).
            raise TrainingError(
                f"The checkpoint {path} does not fit the network built from the config "
                f"({_one_line(error)}). The network's settings ([NETWORK], "
                "[SFG], [MULTITASK], [TASK] sections) and the image channels must be those "
                "it was trained with, and to resume training its [TRAINING] optimiser and "
                f"[SYSTEM] mixed_precision (see {RunFolder.SETTINGS} in its model_dir); or point "
                "[SYSTEM] model_dir at another run.") from None
        return None


def unreadable(path: str) -> str | None:
    """What is wrong with the files of checkpoint `path` (a prefix: `.../ckpt-20`), or
    None when every tensor in them reads back with its checksum."""
    try:
        reader = tf.train.load_checkpoint(path)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except (IndexError, ValueError, tf.errors.OpError) as error:
        files = sorted(glob.glob(glob.escape(path) + ".*"))
        listed = ", ".join(os.path.basename(f) for f in files) or "no files"
        return f"{path}: {listed}: {_one_line(error)}"
    return None


def variables_by_path(layer: keras.layers.Layer) -> dict:
    """Every variable of `layer` keyed by its path inside the layer."""
    prefix = (layer.path or layer.name) + "/"
    found = {}
    for variable in layer.weights:
        key = variable.path[len(prefix):] if variable.path.startswith(prefix) else variable.path
        if key in found:
            raise ValueError(f"Two variables of layer `{layer.name}` share the path {key!r}: "
                             "give its sublayers distinct names.")
        found[key] = variable
    return found


def saved_shapes(checkpoint: str, layer: keras.layers.Layer,
                 name: str = "model") -> dict | None:
    """``{path: (built shape, saved shape)}`` for each variable of ``layer`` (saved as the
    trackable ``name``, as ``CheckpointStore(model_dir, model=layer)`` does) whose shape
    in ``checkpoint`` differs from the built one; None when the checkpoint's files cannot
    be read (restoring skips it, with a warning). Read before anything is restored, so
    that a command can say what differs instead of only that the checkpoint does not
    fit."""
    try:
        saved = dict(tf.train.list_variables(checkpoint))
    except (IndexError, ValueError, tf.errors.OpError):
        return None
    differing = {}
    for path, variable in variables_by_path(layer).items():
        # TensorFlow's key of a variable in a dict of trackables: '/' escaped as '.S'.
        trained = saved.get(f"{name}/{path.replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE")
        if trained is not None and tuple(trained) != tuple(variable.shape):
            differing[path] = (tuple(variable.shape), tuple(trained))
    return differing


def random_states(layer: keras.layers.Layer) -> dict:
    """The state variables of the random streams (`keras.random.SeedGenerator`) of `layer`
    and its sublayers: what `layer.variables` holds beyond `layer.weights`.

    Keyed by their order in `layer.variables`, which the network's structure fixes: their
    own paths (`seed_generator_3/...`) are numbered in the order a process creates them,
    so they would not name the same stream in another process.
    """
    weights = {id(variable) for variable in layer.weights}
    streams = [variable for variable in layer.variables if id(variable) not in weights]
    return {f"stream_{index}": variable for index, variable in enumerate(streams)}


def available_iterations(directory: str) -> list[int]:
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return []
    found = []
    for path in state.all_model_checkpoint_paths:
        match = re.search(rf"{CHECKPOINT_NAME}-(\d+)$", path)
        if match and tf.io.gfile.exists(path + ".index"):
            found.append(int(match.group(1)))
    return sorted(found)


def _checkpoint_path(directory: str, iteration: int) -> tuple[str, int]:
    found = available_iterations(directory)
    if not found:
        raise TrainingError(
            f"No checkpoint in {directory}. Train first (sfg_train), or point "
            "[SYSTEM] model_dir at the folder of a trained run.")
    if iteration == -1:
        iteration = found[-1]
    if iteration not in found:
        raise TrainingError(
            f"No checkpoint of iteration {iteration} in {directory}. Available iterations: "
            f"{', '.join(map(str, found))}; -1 takes the latest.")
    return _prefix(directory, iteration), iteration


def _prefix(directory: str, iteration: int) -> str:
    return os.path.join(directory, f"{CHECKPOINT_NAME}-{iteration}")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:300]
