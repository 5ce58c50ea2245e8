"""The local SageMaker: an embedded host that speaks the SageMaker, SageMaker Runtime and
CloudWatch wire protocols and really serves scikit-learn models.

An unmodified boto3 client talks to it with `endpoint_url=`. It knows nothing of
the rest of `manager`: it is a server, like AWS itself.

    with LocalSageMaker(state_dir=path) as host:
        sm = host.client("sagemaker")
"""

from manager.local_sagemaker.server import LocalSageMaker

__all__ = ["LocalSageMaker"]
