"""Pages variantctl writes or serves, and what they ship with them (no network at run time)."""
