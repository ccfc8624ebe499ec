"""Keras layers of mmkeras: attention, fusion, encoders, transformer blocks."""

from mmkeras.layers.attention import FusedMultiHeadAttention

__all__ = ["FusedMultiHeadAttention"]
