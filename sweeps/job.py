"""One job: check the config, get the teacher, distil along the schedule, log, register.

Everything lands in one MLflow run (nested under the sweep's parent run in a multirun):
params = the resolved config with dotted keys; tags = method, git commit, overrides, sweep id;
metrics = throttled training loss, and per phase the gap (and FID/KID) at step = the phase's
step count; artifacts = resolved config, phase checkpoints, sample grids; the student is
logged and registered with its tags. Returns the objective for the sweeper. With `devices=N`
(or as several cluster tasks) the trainings run on data-parallel ranks (`sweeps.distributed`);
everything else stays in this process.
"""
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, check

log = logging.getLogger(__name__)


def fail(message: str) -> None:
    """Bad input: one line, exit code 2, nothing started."""
    from .redaction import redact
    print(f"error: {redact(message)}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def resolve_device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        fail("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return name


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig
    return Path(HydraConfig.get().runtime.output_dir)


def hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


NOT_IN_NAMES = ("hydra", "debug", "eval", "tracking", "experiment_name", "experiment", "optuna", "registry",
                "cache_dir", "device", "devices", "nodes", "compile")


def run_label(method: str, family: str, schedule) -> str:
    """The run's name: method, family, schedule and the values this job was given on the command line
    (a sweep's swept values), e.g. `tract vp 256-16-1 mu_s=0.9`."""
    given = []
    for override in hydra_overrides():
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key.split(".")[0] in NOT_IN_NAMES or key in ("distill.schedule",):
            continue
        try:
            value = f"{float(value):.4g}" if any(c in value for c in ".eE") else value
        except ValueError:
            pass
        given.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return " ".join([method, family, "-".join(map(str, schedule)), *given])[:250]


def run_job(cfg: DictConfig) -> float:
    from .redaction import redact, redact_logs
    redact_logs()  # this process's log handlers (Hydra configures them per job)
    try:
        tc, dc = check(cfg)
    except ConfigError as e:
        fail(str(e))
    device = resolve_device(cfg.device)
    from . import distributed
    problem = distributed.check(cfg, device)
    if problem:
        fail(problem)
    from .optuna_link import current_trial
    try:
        trial = current_trial(cfg)
    except ValueError as e:
        fail(str(e))
    ranks = distributed.Ranks(cfg.devices, device)
    try:
        if ranks.follower:  # a cluster task of rank > 0: trains what task 0 sends, reports nothing
            ranks.follow()
            return float("nan")
        return _run(cfg, tc, dc, device, ranks, trial)
    finally:
        ranks.close()


def _run(cfg: DictConfig, tc, dc, device: str, ranks, trial) -> float:
    from .redaction import redact
    import mlflow
    import torch

    from distill_core import data as core_data
    from distill_core.loop import DivergenceError

    from . import registry, tracking
    from .distributed import Reporter, WorkerError, distill_task
    from .outbox import TrackingOutage
    from .teachers import TeacherError, family_of, get_teacher, resolve_uri

    try:
        data = core_data.load(cfg.data.name, cfg.data.split, cfg.data.root, seed=cfg.seed)
    except core_data.DataError as e:
        fail(str(e))
    if cfg.eval.fid or cfg.eval.kid:  # a missing or foreign weights file fails now, not after the teacher
        from distill_core import fid as core_fid
        try:
            core_fid.resolve_weights(cfg.eval.inception_weights)
        except core_fid.WeightsError as e:
            fail(str(e))
    try:
        exp_id = tracking.setup(cfg.tracking.uri, cfg.experiment_name)
    except tracking.AuthError as e:
        fail(str(e))
    except Exception as e:
        if tracking.denied(e):
            fail(f"tracking.uri={cfg.tracking.uri}: user {tracking.user()} may not use experiment "
                 f"{cfg.experiment_name} ({e.error_code}); ask its owner for access")
        fail(f"tracking.uri={cfg.tracking.uri}: the tracking store does not answer ({type(e).__name__}: {str(e)[:200]})")
    if str(cfg.teacher.source).startswith("models:/"):
        try:
            source = resolve_uri(str(cfg.teacher.source))  # a missing teacher fails here, before any run exists
        except TeacherError as e:
            fail(str(e))
        if registry.is_pickle_only(source) and not cfg.registry.pickle:
            fail(f"teacher.source: {cfg.teacher.source} is stored only as a pickle (registered before the weights "
                 f"format), and loading it runs code from the store; set registry.pickle=true if you trust it")
        if family_of(source) != cfg.diffusion.family:
            fail(f"teacher.source: {cfg.teacher.source} is a {family_of(source)} teacher; it cannot teach with "
                 f"diffusion={cfg.diffusion.family} (use diffusion={family_of(source)}, or a "
                 f"{cfg.diffusion.family} teacher)")
        try:  # download and check it now: a tampered or missing weights file fails before any run exists
            preloaded = (registry.load(f"models:/{source.name}/{source.version}", ranks.host_device,
                                       allow_pickle=cfg.registry.pickle), f"{source.name}/{source.version}")
        except registry.RegistryError as e:
            fail(f"teacher.source: {e}")
    else:
        preloaded = None

    out = output_dir()
    out.mkdir(parents=True, exist_ok=True)
    job = JobRecord(Path(cfg.cache_dir) / "jobs" / job_key(cfg), out)
    resume_id = job.resumable_run(mlflow)
    tags = {"role": "student", "method": dc.method, "family": tc.family["family"], "git_commit": tracking.git_commit(),
            "overrides": " ".join(hydra_overrides()),
            "sweep_id": os.environ.get(tracking.SWEEP_ENV, ""), "output_dir": str(out), "job_dir": str(job.dir),
            **(trial.tags() if trial else {})}
    tags = {k: redact(str(v)) for k, v in tags.items() if str(v)}  # string values only (REST store); none empty
    parent = tracking.parent_run_id()
    tracking.system_metrics_every(cfg.tracking.system_metrics_interval)
    try:
        if resume_id:
            log.info("resuming run %s from %s", resume_id, job.dir)
            run_ctx = mlflow.start_run(run_id=resume_id, nested=mlflow.active_run() is not None,
                                       log_system_metrics=bool(cfg.tracking.system_metrics))
        else:
            run_ctx = mlflow.start_run(experiment_id=exp_id, parent_run_id=parent,
                                       nested=mlflow.active_run() is not None, tags=tags,
                                       run_name=run_label(dc.method, tc.family["family"], dc.schedule),
                                       log_system_metrics=bool(cfg.tracking.system_metrics))
            job.reset()  # a fresh job: only once its run exists (a refused run loses nothing)
    except mlflow.exceptions.MlflowException as e:
        if not tracking.denied(e):
            raise
        fail(f"tracking.uri={cfg.tracking.uri}: user {tracking.user()} may not create runs in experiment "
             f"{cfg.experiment_name} (403 {e.error_code}); ask its owner for EDIT access")
    with run_ctx as run, tracking.killed_on_interrupt():
        run_id = run.info.run_id
        job.update(run_id=run_id, status="RUNNING")
        if not resume_id:
            mlflow.log_params(tracking.job_params(cfg))
            resolved = out / "config_resolved.yaml"
            resolved.write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
            mlflow.log_artifact(str(resolved))
        data_cfg = {"name": cfg.data.name, "split": cfg.data.split, "root": cfg.data.root}
        if not resume_id:
            tracking.log_dataset(data, data_cfg)
        if job.get("teacher_version"):  # a resumed job keeps the teacher it started with
            teacher_version = job.get("teacher_version")
            teacher = registry.load(f"models:/{teacher_version}", ranks.host_device, allow_pickle=cfg.registry.pickle)
        else:
            try:
                teacher, teacher_version = preloaded or get_teacher(cfg, tc, data, data_cfg, ranks, run_id)
            except registry.RegistryError as e:  # a reused teacher whose weights fail their check
                mlflow.set_tag("failure", str(e))
                job.update(status="FAILED")
                mlflow.end_run("FAILED")
                fail(str(e))
            except WorkerError as e:  # a rank of the teacher's training failed: the teacher run says so
                failed(mlflow, job, e)
            except torch.cuda.OutOfMemoryError:
                failed(mlflow, job, OutOfMemory(out_of_memory_line(cfg, "teacher.batch_size", device)))
            job.update(teacher_version=teacher_version)
            mlflow.set_tags({"teacher_version": teacher_version,
                             "teacher_run_id": registry.version_of(f"models:/{teacher_version}").run_id})
        if teacher.info.get("role") != "student":  # a distilled student teaches with its own jump
            # the sampler is this job's choice, not the teacher's (a reused teacher keeps its training)
            teacher.family = teacher.family.replace(sampler=tc.family["sampler"],
                                                    **({"t0": tc.family["t0"]} if "t0" in tc.family else {}))

        if resume_id:  # what a tracking outage kept from the store when the job stopped
            from .distributed import SPILL
            from .outbox import replay
            if replay(job.dir / SPILL, run_id):
                log.info("delivered the metrics kept during the tracking outage")
        if not job.get("model_id"):  # the student's logged model, created now so the final metrics link to it
            job.update(model_id=mlflow.initialize_logged_model(name="student", source_run_id=run_id,
                                                               experiment_id=run.info.experiment_id).model_id)
            mlflow.clear_active_model()  # only the final evaluation links to it
        reporter = Reporter(mlflow.get_tracking_uri(), run_id, synchronous=not cfg.tracking.async_logging,
                            logged=tracking.logged_steps(run_id) if resume_id else None, eval_cfg=cfg, trial=trial,
                            outage_limit_s=float(cfg.tracking.outage_limit_s), model_id=job.get("model_id"),
                            final_steps=int(dc.schedule[-1]))
        eval_noise = torch.randn((cfg.eval.gap_samples, *teacher.data_shape),
                                 generator=torch.Generator().manual_seed(cfg.seed + 1))
        try:
            result = ranks.run(distill_task, teacher, data, dc, job.dir, reporter, eval_noise)
        except (DivergenceError, WorkerError) as e:
            failed(mlflow, job, e)
        except torch.cuda.OutOfMemoryError:
            failed(mlflow, job, OutOfMemory(out_of_memory_line(cfg, "distill.batch_size", device)))
        except TrackingOutage as e:
            stop_for_outage(cfg, job, e)
        tracking.flush()
        last = result.phases[-1]
        if result.stopped_after is not None:
            return pruned(mlflow, job, trial, result, cfg)
        student = result.model
        student.info["teacher_version"] = teacher_version
        version = job.get("registered_version")
        if version is None:
            version = registry.log_and_register(
                student, "student", cfg.registry.name,
                {"method": dc.method, "family": tc.family["family"], "steps": last.steps, "schedule": dc.schedule,
                 "dataset": cfg.data.name,
                 "teacher_version": teacher_version,
                 **{k: v for k, v in last.metrics.items()}}, run_id, pickle=cfg.registry.pickle,
                model_id=job.get("model_id"))
            job.update(registered_version=version)
        log.info("registered %s version %s (%s, %d steps): %s", cfg.registry.name, version, dc.method, last.steps,
                 ", ".join(f"{k}={v:.4g}" for k, v in last.metrics.items()))
        value = last.metrics.get(cfg.objective)
        if value is None:
            fail(f"objective={cfg.objective} was not computed (enable eval.{cfg.objective})")
        from distill_core.distill import phase_updates
        total = sum(phase_updates(dc))
        if trial is not None:  # the last phase's value is the trial's last intermediate value too
            trial.report(value, total)
        mlflow.log_metric("objective", float(value), step=total)  # once: what the sweeper gets (param `objective` names it)
        teacher_run = mlflow.get_run(run_id).data.tags.get("teacher_run_id", "")
        mlflow.set_tag("mlflow.note.content", tracking.describe_run(result, cfg, teacher_version, version,
                                                                   run.info.experiment_id, teacher_run))
        job.update(status="FINISHED")
        if parent is None:  # (a sweep prints its own link at its end)
            print(f"runs: {tracking.ui_link(cfg.tracking.uri, exp_id)}", flush=True)
        return float(value)


def pruned(mlflow, job, trial, result, cfg) -> float:
    """The sweep's pruner stopped the job at a phase boundary: what it measured stays logged, the
    run ends KILLED with `pruned_at_phase`, the trial is told PRUNED, nothing is registered."""
    phase, last = result.stopped_after, result.phases[-1]
    value = float(last.metrics.get(cfg.objective, float("nan")))
    mlflow.set_tags({"pruned_at_phase": str(phase), "pruned_at_steps": str(last.steps)})
    from . import tracking
    tracking.abandon_model(job.get("model_id"))
    trial.prune()
    job.update(status="PRUNED")
    mlflow.end_run("KILLED")
    log.info("trial %d pruned after phase %d of %d (%d steps): %s=%.4g", trial.number, phase,
             len(cfg.distill.schedule) - 1, last.steps, cfg.objective, value)
    return value


def stop_for_outage(cfg, job, error) -> None:
    """The tracking store stayed away past `tracking.outage_limit_s`: the training stopped after a
    checkpoint; the run stays as it was in the store and the same command resumes it."""
    from .redaction import redact
    print(f"error: tracking.uri={redact(str(cfg.tracking.uri))}: {error}; the job stopped after its last checkpoint "
          f"and kept the undelivered metrics in {job.dir}; run the same command again to resume in the same run",
          file=sys.stderr, flush=True)
    os._exit(3)  # MLflow's own exit handlers would wait on the absent store


class OutOfMemory(RuntimeError):
    """The device ran out of memory: one line with the batch size and the device's memory."""


def out_of_memory_line(cfg, key: str, device: str) -> str:
    import torch
    batch = cfg.distill.batch_size if key.startswith("distill") else cfg.teacher.batch_size
    props = torch.cuda.get_device_properties(torch.device(device) if ":" in device else 0)
    torch.cuda.empty_cache()
    return (f"CUDA out of memory: {key}={batch} ({batch // (cfg.devices * cfg.nodes)} per rank) with model={cfg.model.preset} "
            f"does not fit on {props.name} ({props.total_memory / 2 ** 30:.0f} GiB); lower {key} or spread it with "
            f"devices=N")


def failed(mlflow, job, error: Exception) -> None:
    """A training that failed at run time: the run ends FAILED with the reason as its `failure` tag
    and the error goes on to the sweeper. A diverged loss fails the job for good; a rank that died
    (a killed worker, a lost node) leaves it resumable: the rerun continues in the same run from the
    last checkpoint."""
    from . import tracking
    from .distributed import WorkerError
    tracking.flush()
    mlflow.set_tag("failure", str(error))
    if not isinstance(error, WorkerError):
        job.update(status="FAILED")
    mlflow.end_run("FAILED")
    log.error("%s", error)
    raise error


def job_key(cfg: DictConfig) -> str:
    """Same command, same key: the resolved job config plus the job's place in its sweep."""
    from hydra.core.hydra_config import HydraConfig
    text = OmegaConf.to_yaml(cfg, resolve=True)
    try:
        hc = HydraConfig.get()
        text += f"|{hc.mode.name}|{hc.job.num if hc.mode.name == 'MULTIRUN' else ''}"
    except ValueError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class JobRecord:
    """job.json: the MLflow run, the teacher and the registered version of one job, written
    atomically in its job folder (where its checkpoints live) and copied to Hydra's output folder."""

    def __init__(self, directory: Path, output: Path):
        self.dir, self.output = Path(directory), Path(output)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "job.json"
        self.state = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key):
        return self.state.get(key)

    def update(self, **values) -> None:
        self.state.update(values)
        text = json.dumps(self.state, indent=1)
        for folder in (self.dir, self.output):
            tmp = folder / ".job.json.tmp"
            tmp.write_text(text)
            os.replace(tmp, folder / "job.json")

    def reset(self) -> None:
        """A fresh job: forget an earlier finished one and its checkpoints."""
        for f in self.dir.glob("*"):
            if f.is_file():
                f.unlink()
        self.state = {}

    def resumable_run(self, mlflow):
        """The recorded run id if the job was cut off (killed, not failed or finished) and its run exists."""
        run_id = self.state.get("run_id")
        if not run_id or self.state.get("status") != "RUNNING":
            return None
        try:
            run = mlflow.tracking.MlflowClient().get_run(run_id)
        except Exception:
            return None
        return run_id if run.info.status != "FINISHED" else None
