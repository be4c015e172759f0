"""Every KD method, one module each, registered by name (:data:`METHODS`).

The interface (:class:`KDMethod`, ``forward(records, data_samples) -> {term: tensor}``), the
build context and the registry are in :mod:`pgd.distill.methods.base`; adding a method:
docs/adding-a-kd-method.md.
"""

from pgd.distill.methods.base import (
    METHODS,
    KDMethod,
    MethodContext,
    build_method,
    method_class,
    register_method,
)

# one module per method; importing them fills METHODS
from pgd.distill.methods import crosskd, defeat, fgd, fgfi, fkd, frs, ld, pgd  # noqa: E402,F401  isort: skip

__all__ = ["METHODS", "KDMethod", "MethodContext", "build_method", "method_class", "register_method"]
