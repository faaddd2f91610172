"""See inference/__init__.py."""
