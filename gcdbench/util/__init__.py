"""Small helpers shared by the core: hashing and atomic writes."""
