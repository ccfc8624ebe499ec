"""Public fused ops. Each validates its inputs, infers shapes symbolically and
picks an implementation (see `mmkeras.kernels`)."""

from mmkeras.ops.attention import fused_attention
from mmkeras.ops.attention_reference import attention_reference
from mmkeras.ops.contrastive import contrastive_loss
from mmkeras.ops.contrastive import contrastive_loss_reference
from mmkeras.ops.fusion import gated_fusion
from mmkeras.ops.fusion import gated_fusion_reference
from mmkeras.ops.fusion import low_rank_fusion
from mmkeras.ops.fusion import low_rank_fusion_reference

__all__ = [
    "fused_attention",
    "attention_reference",
    "contrastive_loss",
    "contrastive_loss_reference",
    "gated_fusion",
    "gated_fusion_reference",
    "low_rank_fusion",
    "low_rank_fusion_reference",
]
