"""Public fused ops. Each validates its inputs, infers shapes symbolically and
picks an implementation (see `mmkeras.kernels`)."""

from mmkeras.ops.attention import fused_attention
from mmkeras.ops.attention_reference import attention_reference

__all__ = ["fused_attention", "attention_reference"]
