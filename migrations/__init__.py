"""Alembic environment and versions, shipped in the package for `variantctl db upgrade`."""
