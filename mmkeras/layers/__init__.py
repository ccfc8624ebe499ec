"""Keras layers of mmkeras: attention, fusion, encoders, transformer blocks."""

from mmkeras.layers.attention import FusedMultiHeadAttention
from mmkeras.layers.encoders import AudioEncoder
from mmkeras.layers.encoders import ImageEncoder
from mmkeras.layers.encoders import SequencePooling
from mmkeras.layers.encoders import TextEncoder
from mmkeras.layers.fusion import AttentionFusion
from mmkeras.layers.fusion import BilinearFusion
from mmkeras.layers.fusion import ConcatFusion
from mmkeras.layers.fusion import FiLM
from mmkeras.layers.fusion import GatedFusion
from mmkeras.layers.fusion import LowRankFusion
from mmkeras.layers.fusion import TensorFusion
from mmkeras.layers.fusion_attention import CrossModalAttention
from mmkeras.layers.fusion_attention import PerceiverFusion
from mmkeras.layers.modality_dropout import ModalityDropout
from mmkeras.layers.transformer import TransformerDecoderBlock
from mmkeras.layers.transformer import TransformerEncoderBlock
from mmkeras.losses import LogitScale

__all__ = [
    "AttentionFusion",
    "AudioEncoder",
    "ImageEncoder",
    "SequencePooling",
    "TextEncoder",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "BilinearFusion",
    "ConcatFusion",
    "CrossModalAttention",
    "FiLM",
    "FusedMultiHeadAttention",
    "GatedFusion",
    "LogitScale",
    "LowRankFusion",
    "ModalityDropout",
    "PerceiverFusion",
    "TensorFusion",
]
