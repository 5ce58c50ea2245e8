"""Training, hyperparameter tuning and batch transform jobs that really run.

A training job for the built-in XGBoost algorithm runs `xgboost.train` in a worker process
(`worker.py`); a batch transform job scores its input objects with the model's container
emulation; a tuning job launches training jobs, `MaxParallelTrainingJobs` at a time, choosing
hyperparameters with its strategy (`tuning.py`). Jobs wait for a free core as AWS jobs wait for
capacity (`SecondaryStatus: Starting`). Describe* answers as AWS does while the job moves:
`InProgress` (with `SecondaryStatus` and its transitions) to `Completed`, `Failed` or `Stopped`.
Log lines go to CloudWatch Logs (`/aws/sagemaker/TrainingJobs`, `/aws/sagemaker/TransformJobs`).

Jobs are kept in `<state_dir>/jobs.json`; a job that was running when the host stopped is
`Failed` on restart, with that reason.
"""

from __future__ import annotations

from manager.local_sagemaker.job_runner import JobInputError
from manager.local_sagemaker.transform_jobs import TransformJobs
from manager.local_sagemaker.tuning_jobs import TuningJobs

__all__ = ["JobInputError", "Jobs"]


class Jobs(TuningJobs, TransformJobs):
    """Every kind of job, as the control plane serves them (`op_*`): training (`training_jobs`),
    tuning, which launches training jobs (`tuning_jobs`), and batch transform (`transform_jobs`),
    on the life they share (`job_runner`)."""
