"""DDP wrapper that also works for CPU modules (gloo): mmengine always passes
``device_ids=[LOCAL_RANK]``, which torch rejects for a module on the CPU."""

from __future__ import annotations

from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class PGDDistributedDataParallel(MMDistributedDataParallel):
    def __init__(self, module, device_ids=None, **kwargs):
        on_cpu = next(module.parameters()).device.type == "cpu"
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)
