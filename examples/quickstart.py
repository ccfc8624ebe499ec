"""Quickstart: a two-modality model with fused cross-attention, trained with
model.fit on the current Keras backend (KERAS_BACKEND=tensorflow|jax|torch).

    python examples/quickstart.py
"""

import mmkeras  # noqa: F401  import first: see mmkeras/_import_guard.py

import keras
import numpy as np

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)

# Toy data: a "text" sequence and an "image" patch sequence; the label says
# whether their combined mean signal is positive.
n, text_len, patches, width = 512, 12, 16, 32
text = rng.standard_normal((n, text_len, width)).astype("float32")
image = rng.standard_normal((n, patches, width)).astype("float32")
label = (text.mean(axis=(1, 2)) + image.mean(axis=(1, 2)) > 0).astype("int32")

text_in = keras.Input((text_len, width), name="text")
image_in = keras.Input((patches, width), name="image")
attended = mmkeras.layers.FusedMultiHeadAttention(num_heads=4, key_dim=8)(
    text_in, image_in
)
pooled = keras.layers.Concatenate()([
    keras.layers.GlobalAveragePooling1D()(attended),
    keras.layers.GlobalAveragePooling1D()(text_in),
    keras.layers.GlobalAveragePooling1D()(image_in),
])
hidden = keras.layers.Dense(32, activation="relu")(pooled)
output = keras.layers.Dense(2, activation="softmax")(hidden)
model = keras.Model([text_in, image_in], output)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit({"text": text, "image": image}, label, epochs=10,
                    batch_size=32, validation_split=0.2, verbose=2)
print(f"backend={keras.backend.backend()} "
      f"final val_accuracy={history.history['val_accuracy'][-1]:.3f}")
