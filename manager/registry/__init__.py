"""The registry: typed tables, the queries on them, and their migrations."""
