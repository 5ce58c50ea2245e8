"""variantctl: endpoint update and A/B traffic manager for SageMaker models."""

__version__ = "0.1.0"
