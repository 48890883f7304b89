"""Every way of embedding regions, behind one interface and registered by canonical name."""
from musecl.methods import (
    baselines,  # noqa: F401
    combinations,  # noqa: F401
    vector,  # noqa: F401
)
from musecl.methods.base import METHODS, RegionEmbedder, make_method, register
from musecl.methods.multisemantic import MuseCL

__all__ = ["METHODS", "MuseCL", "RegionEmbedder", "make_method", "register"]
