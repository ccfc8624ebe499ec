"""Runnable examples of every fusion layer family (python examples/fusion_layers.py)."""

import numpy as np
import keras
import mmkeras
from mmkeras import layers, losses

B = 4
image, text, audio = (np.random.rand(B, d).astype("float32") for d in (32, 16, 24))
present = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0]], bool)

# Vector fusion: Concat, Gated, Tensor, LowRank, Bilinear, Attention share one interface.
for layer in (layers.ConcatFusion(8), layers.GatedFusion(8), layers.TensorFusion(8),
              layers.LowRankFusion(8, rank=4), layers.AttentionFusion(8)):
    print(type(layer).__name__, layer([image, text, audio], modality_mask=present).shape)
print("BilinearFusion", layers.BilinearFusion(8)({"image": image, "text": text}).shape)

# Conditioning: FiLM modulates features (here a token sequence) by a vector.
tokens = np.random.rand(B, 10, 32).astype("float32")
print("FiLM", layers.FiLM()([tokens, text]).shape)

# Sequences: a text sequence attends to image patches; latents read all tokens.
patches = np.random.rand(B, 49, 32).astype("float32")
words = np.random.rand(B, 12, 32).astype("float32")
lengths = np.array([12, 7, 3, 12])
pad = np.arange(12)[None, :] < lengths[:, None]
print("CrossModalAttention", layers.CrossModalAttention(num_heads=4)([words, patches]).shape)
print("PerceiverFusion", layers.PerceiverFusion(num_latents=8, units=32, num_heads=4)(
    [words, patches], padding_mask=[pad, None]).shape)

# Missing modalities while training: ModalityDropout drops whole modalities.
dropped = layers.ModalityDropout(0.3)([image, text], training=True)

# Contrastive: a dual encoder's output packs both embeddings (+ a learned scale).
a = keras.layers.UnitNormalization()(np.random.rand(B, 16).astype("float32"))
b = keras.layers.UnitNormalization()(np.random.rand(B, 16).astype("float32"))
packed = layers.LogitScale(10.0, -10.0)([a, b])
print("sigmoid loss", float(losses.ContrastiveLoss(kind="sigmoid", learnable=True)(np.zeros(B), packed)))
print("softmax op", float(mmkeras.ops.contrastive_loss(a, b, 10.0, kind="softmax")))
