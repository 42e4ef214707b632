"""Per-phase evaluation beyond the gap: pixel FD (cheap, always on unless 0 samples), the
undistilled teacher's curves when asked (`eval.teacher_curves`), FID/KID when enabled, and for a
class-conditional model on a set with a classifier (`distill_core.classifier`) its class accuracy beside the
teacher's at the same step count (and, in the first phase, the teacher's at the schedule's base count)."""
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhaseEvaluation:
    """What each phase measures beyond the gap (picklable: built on rank 0 by the run's reporter)."""
    settings: object  # settings.types.EvalSettings
    seed: int = 0

    def build(self, data, device, teacher=None, base_steps=None):
        return phase_evaluator(self.settings, self.seed, data, device, teacher, base_steps)


def phase_evaluator(ev, seed: int, data, device, teacher=None, base_steps=None):
    """A function (phase, steps, model) -> metrics, or None when nothing beyond the gap is asked for;
    its `tags` are the FID protocol, recorded on the run."""
    parts, tags = [], {}
    if ev.pixel_fd_samples:
        from distill_core.pixel_fd import PixelFD
        pfd = PixelFD(data.all(), int(ev.pixel_fd_samples), seed=seed,
                      ancestral_gammas=tuple(ev.ancestral_gammas), device=device)
        parts.append(lambda phase, steps, model: {"pixel_fd": pfd.ddim(model, steps)})
        if (ev.teacher_curves or ev.teacher_base) and teacher is not None:
            parts.append(teacher_curves(ev, pfd, teacher, base_steps))
    if teacher is not None and teacher.num_classes:
        part = class_accuracies(ev, seed, data, teacher, base_steps)
        if part is not None:
            parts.append(part)
    if ev.fid or ev.kid:
        from distill_core import fid as core_fid
        evaluator = core_fid.Evaluator.from_config(data, fid=ev.fid, kid=ev.kid, num_samples=ev.num_samples,
                                                   weights=ev.inception_weights, device=device, seed=seed,
                                                   seeds=ev.fid_seeds, extrapolate=ev.fid_extrapolate,
                                                   fid_ref=ev.fid_ref)
        parts.append(lambda phase, steps, model: evaluator(model, steps))
        tags = evaluator.protocol()
    if not parts:
        return None

    def evaluate(phase, steps, model):
        metrics = {}
        for part in parts:
            metrics.update(part(phase, steps, model))
        return metrics
    evaluate.tags = tags
    return evaluate


def class_accuracies(ev, seed: int, data, teacher, base_steps):
    """class_acc (the student), teacher_class_acc (the teacher at the same count) and, once, teacher_class_acc_base;
    None (one log line) where the data has no classifier here."""
    import torch

    from distill_core import classifier as core_classifier
    classifier = core_classifier.for_data(data)
    if classifier is None:
        log.info("class accuracy: no classifier for data.name=%s (there is one for %s); left out", data.name,
                 ", ".join(core_classifier.CLASSIFIABLE))
        return None
    n = max(int(ev.gap_samples), int(ev.pixel_fd_samples or 0), 10 * teacher.num_classes)
    device = next(teacher.parameters()).device
    noise = torch.randn((n, *teacher.data_shape), generator=torch.Generator().manual_seed(seed + 4)).to(device)

    def accuracies(phase, steps, model):
        out = {"class_acc": core_classifier.class_accuracy(model, classifier, noise, steps),
               "teacher_class_acc": core_classifier.class_accuracy(teacher, classifier, noise, steps)}
        if phase == 0 and base_steps:
            out["teacher_class_acc_base"] = core_classifier.class_accuracy(teacher, classifier, noise, base_steps)
        return out
    return accuracies


def teacher_curves(ev, pfd, teacher, base_steps):
    """With `eval.teacher_curves`, every phase also scores the original teacher at the student's step
    count under DDIM and the ancestral sampler (PD Fig. 4); with `eval.teacher_base`, the first phase
    scores it at the schedule's base step count (PD Table 1)."""
    def curves(phase, steps, model):
        out = {}
        if ev.teacher_curves:
            out["teacher_pixel_fd"] = pfd.ddim(teacher, steps)
            out["teacher_pixel_fd_ancestral"], out["teacher_ancestral_gamma"] = pfd.ancestral(teacher, steps)
        if ev.teacher_base and phase == 0 and base_steps:
            log.info("scoring the teacher at its %d base steps (DDIM and ancestral)", base_steps)
            out["teacher_pixel_fd_base"] = pfd.ddim(teacher, base_steps)
            out["teacher_pixel_fd_base_ancestral"], out["teacher_base_ancestral_gamma"] = \
                pfd.ancestral(teacher, base_steps)
        return out
    return curves
