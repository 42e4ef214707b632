"""One job as named stages: check the inputs -> the student's run -> the teacher -> distil -> register -> finish."""
from .run import run_job

__all__ = ["run_job"]
