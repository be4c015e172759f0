"""MMDetection 3.x / mmengine integration: registers the platform's dataset, metric, hooks,
model wrapper and distiller in mmdet's registries and applies the compatibility fixes.

Configs name it in ``custom_imports`` so mmdet's own tools can run them too.
"""

from pgd import compat

compat.apply()

from pgd.distill import distiller  # noqa: E402,F401  (registers PGDDistiller)
from pgd.integration import dataset, ddp, hooks, metric  # noqa: E402,F401  (registration)


def init_scope() -> None:
    """Make ``mmdet`` the default registry scope (the Runner does this from the config;
    scripts and tests that build models directly call this)."""
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
