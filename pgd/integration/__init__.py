"""MMDetection 3.x / mmengine integration: registers the platform's dataset, metric, hooks,
model wrapper and distiller in mmdet's registries and applies the compatibility fixes.

Configs name it in ``custom_imports`` so mmdet's own tools can run them too.
"""

from pgd import compat

compat.apply()

from pgd.integration import dataset, ddp, hooks, metric  # noqa: E402,F401  (registration)

try:  # the distiller registers itself; absent until the method package is installed
    from pgd.distill import distiller  # noqa: F401
except ImportError as exc:  # pragma: no cover - only during partial installs
    if "pgd.distill" not in str(exc):
        raise


def init_scope() -> None:
    """Make ``mmdet`` the default registry scope (the Runner does this from the config;
    scripts and tests that build models directly call this)."""
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
