"""A batch of windows as the network and TensorBoard see it.

The data engine's windows are `(B, X, Y, Z, C)` per section; the network takes the image
sections side by side on the channels and, for a 2D network, without the Z axis.
"""

from __future__ import annotations

from keras import ops


class BatchLayout:
    """The network's view of a batch: the `images` sections, `spatial_dims` axes."""

    def __init__(self, images, spatial_dims: int):
        self.images = tuple(images)
        self.spatial_dims = spatial_dims

    def spatial(self, tensor):
        """A window batch `(B, X, Y, Z, C)` as the network sees it (Z dropped in 2D)."""
        if self.spatial_dims == 2 and len(tensor.shape) == 5:
            return tensor[:, :, :, 0, :]
        return tensor

    def network_inputs(self, batch):
        images = [ops.cast(batch[name], "float32") for name in self.images]
        image = images[0] if len(images) == 1 else ops.concatenate(images, axis=-1)
        return self.spatial(image)

    def summary_images(self, tasks: dict, batch, outputs) -> dict:
        """The middle slice (along z) of the first window: the image channels, and per
        voxel task its target and its prediction (labels for class tasks), each scaled
        to [0, 1]."""
        images = {}
        image = self.network_inputs(batch)
        for channel in range(image.shape[-1]):
            images[f"image_{channel}"] = _slice(image[..., channel:channel + 1])
        for name, task in tasks.items():
            if task.head_kind != "voxel":
                continue
            target = self.spatial(batch[task.target])
            decoded = task.decode(outputs[name])
            prediction = decoded.get("labels", decoded.get("values"))
            images[f"{name}/target"] = _slice(ops.cast(target[..., :1], "float32"))
            images[f"{name}/prediction"] = _slice(ops.cast(prediction[..., :1], "float32"))
        return images


def _slice(volume):
    """`(B, X, Y[, Z], 1)` -> the first example's middle z slice as `(1, Y, X, 1)` in
    [0, 1], the last y row on top (anterior up when the grid is RAS), for TensorBoard."""
    picture = volume[:1]
    if len(picture.shape) == 5:
        picture = picture[:, :, :, picture.shape[3] // 2, :]
    picture = ops.flip(ops.transpose(picture, (0, 2, 1, 3)), axis=1)
    low, high = ops.min(picture), ops.max(picture)
    return (picture - low) / ops.maximum(high - low, 1e-6)
