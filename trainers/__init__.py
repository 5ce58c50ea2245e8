"""Candidate training: local scikit-learn, SageMaker jobs, tuning."""
