"""The plugins bundled with Homelab Core.

Each module here is registered through the ``homelab.plugins`` entry point group in
``pyproject.toml``, exactly as a third-party plugin package would be.
"""
