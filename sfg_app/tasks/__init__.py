"""Task types: each owns its keys, head, loss, training metrics and decoding, and holds
its outputs (`outputs`) and its evaluation metrics (`scoring`), which other types reuse.

``keras.ops`` is imported when the first loss or metric is built (`keras_ops`), so the
config system reads the types' keys without loading Keras, and losses and objective
also run with ``KERAS_BACKEND=torch`` or ``jax``. Nothing here imports TensorFlow.
"""
