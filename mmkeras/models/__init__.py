"""Cross-modal models trained with `model.fit`."""

from mmkeras.models.dual_encoder import DualEncoder
from mmkeras.models.dual_encoder import RecallAtK
from mmkeras.models.dual_encoder import recall_at_k
from mmkeras.models.encoder_decoder import EncoderDecoder
from mmkeras.models.fusion_classifier import FusionClassifier

__all__ = ["DualEncoder", "EncoderDecoder", "FusionClassifier", "RecallAtK",
           "recall_at_k"]
