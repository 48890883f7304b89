"""Data sets in the city folder format: the generated toy city and (later) real cities."""
