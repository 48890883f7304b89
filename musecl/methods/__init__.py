"""Every way of embedding regions, behind one interface and registered by canonical name."""
from musecl.methods.base import METHODS, RegionEmbedder, make_method, register
from musecl.methods.multisemantic import MuseCL

# importing a module registers its methods; this order is the registry's (`musecl methods`, "all")
from musecl.methods import combinations  # noqa: F401, E402  isort: skip
from musecl.methods import baselines  # noqa: F401, E402  isort: skip
from musecl.methods import vector  # noqa: F401, E402  isort: skip

__all__ = ["METHODS", "MuseCL", "RegionEmbedder", "make_method", "register"]
