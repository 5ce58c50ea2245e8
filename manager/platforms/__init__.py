"""Endpoint platforms: the protocol the engine sees (base.py) and its implementation (sagemaker.py)."""
