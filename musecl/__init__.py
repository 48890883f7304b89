"""musecl: MuseCL (Yong & Zhou, IJCAI 2024) as a library behind a reproducible book."""
from musecl.city import City, CityFormatError, load_city, validate_city

__all__ = ["City", "CityFormatError", "load_city", "validate_city"]
__version__ = "0.1.0"
