"""`run_job`: one job, top to bottom. Each stage is a function in a module of its own (this package);
run-time failures end the job in one place (`endings`)."""
import math

from omegaconf import DictConfig


def run_job(cfg: DictConfig) -> float:
    """The job's objective for the sweeper (nan on a follower task of a multi-node job)."""
    from ..common.redaction import redact_logs
    from ..ranks.launch import Ranks
    from ..settings.hydra import from_hydra
    redact_logs()  # this process's log handlers (Hydra configures them per job)
    s = from_hydra(cfg)  # every key checked: one line and exit 2, nothing started
    ranks = Ranks(s.devices, s.device)
    try:
        if ranks.follower:  # a cluster task of rank > 0: trains what task 0 sends, reports nothing
            ranks.follow()
            return math.nan
        return stages(s, ranks)
    finally:
        ranks.close()


def stages(s, ranks) -> float:
    from .distil import distil, student_model
    from .endings import endings
    from .finish import finish
    from .inputs import check_inputs
    from .ownership import owned
    from .pruned import record_pruned
    from .register import register
    from .student_run import student_run
    from .teacher import acquire_teacher, handed_over
    inputs = check_inputs(s)  # one line and exit 2 on bad input; nothing exists yet
    with owned(s, inputs.experiment_id), student_run(s, inputs) as run:  # one live owner; fresh, or resumed
        with endings(s, run):  # divergence, a failed rank, out of memory, a tracking outage, a bad teacher, a full disk
            student_model(s, run)  # (now, while the store answers: training never waits on it)
            teacher = acquire_teacher(s, run, inputs, ranks)
            result = distil(s, run, teacher.model, inputs.data, ranks)
            ref = handed_over(run, teacher)  # (a teacher trained in an outage: registered once the store is back)
            if result.stopped_after is not None:
                return record_pruned(s, run, result)
            version = register(s, run, result, ref)
            return finish(s, run, result, version, ref)
