"""Every way of embedding regions, behind one interface and registered by canonical name."""
from musecl.methods.base import METHODS, RegionEmbedder, make_method, register
from musecl.methods.multisemantic import MuseCL

__all__ = ["METHODS", "MuseCL", "RegionEmbedder", "make_method", "register"]
