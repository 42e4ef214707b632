"""What each ablation's report is: the swept axes, how a run's params key its cell, the paper's numbers."""
import ast

# Reference numbers: DESIGN.md section 4 (CIFAR-10 FID, 50k samples; "unverified" as noted there).
# PD Table 1: (stochastic sampler, DDIM sampler) FID of the undistilled teacher.
PD_TABLE1 = {("both", "snr"): (2.54, 2.78), ("both", "truncated_snr"): (2.47, 2.76),
             ("both", "snr_plus_one"): (2.52, 2.87), ("x", "snr"): (2.65, 2.75), ("x", "truncated_snr"): (2.53, 2.51),
             ("x", "snr_plus_one"): (2.56, 2.65), ("eps", "snr"): (2.59, 2.91), ("eps", "truncated_snr"): "diverges",
             ("eps", "snr_plus_one"): (2.56, 3.27), ("v", "snr"): (2.65, 3.05), ("v", "truncated_snr"): (2.45, 2.75),
             ("v", "snr_plus_one"): (2.49, 2.87)}


# CIFAR-10 FID (1 / 2 steps) from EDM's teacher (DESIGN 3.12, notes/algorithms.md 4): method -> steps -> FID.
THREE_METHODS_CIFAR10 = {("btd", 1): 8.34, ("btd", 2): 5.58, ("tract", 1): 3.78, ("tract", 2): 3.32, ("cd", 1): 3.55,
                         ("cd", 2): 2.93}


def n_phases(params) -> str:
    return f"{len(ast.literal_eval(params['distill.schedule'])) - 1} phase(s)"  # list reprs: literals only, no code


# layout: "runs" (a row per swept value, final-phase metrics), "steps" (a row per step count, over
# the phases of every run), "teacher" (a row per cell, the teacher's base-step scores first).
def recipe(p: dict) -> str:
    """tract, tract_mltract (summed loss: ml-tract's recipe) or btd, from a run's params."""
    return "tract_mltract" if p.get("distill.loss_reduction") == "sum" else p["distill.method"]


# tract_recipe_keys: ml-tract's value of each recipe key that differs from ours (conf/mltract_key/, docs/recipes.md)
MLTRACT = {"loss_reduction": ("distill.loss_reduction", "sum"), "lr": ("distill.lr", 2e-4),
           "lr_schedule": ("distill.lr_schedule", "constant"), "batch_size": ("distill.batch_size", 256),
           "mu_i": ("distill.mu_i_residual", 1e-3), "target_precision": ("distill.target_precision", "float64"),
           "t0": ("diffusion.t0", "clipped")}


def mltract_key(p: dict) -> str:
    """Which of ml-tract's settings a TRACT run took over ours, from what it logged: none, one key, all."""
    def took(name, want):
        value = p.get(name)
        if value is None:
            return False
        try:
            return float(value) == want if isinstance(want, (int, float)) else str(value) == want
        except ValueError:
            return False
    taken = [key for key, (name, want) in MLTRACT.items() if took(name, want)]
    return "none" if not taken else "all" if len(taken) == len(MLTRACT) else "+".join(taken)


SPECS = {
    "tract_mu_s": dict(axes=["distill.mu_s"], key=lambda p: float(p["distill.mu_s"]),
                       paper={0.0: 6.32, 0.5: 5.24, 0.9: 6.04, 0.99: 7.61},
                       note="TRACT Table 3, FID at 1 step, CIFAR-10, 1024->32->1 (unverified)"),
    "tract_mu_i": dict(axes=["distill.mu_i"], key=lambda p: float(p["distill.mu_i"]),
                       paper={0.999: 6.91, 0.9999: 5.5, 0.99995: 5.24, 0.99999: 8.73},
                       note="TRACT Table 4, FID at 1 step (unverified); CPU values are not the paper's"),
    "tract_phases_total": dict(axes=["distill.schedule"], key=n_phases,
                               paper={"1 phase(s)": 14.40, "2 phase(s)": 5.24, "3 phase(s)": 6.06,
                                      "4 phase(s)": 7.27},
                               note="TRACT Table 5, fixed 96M samples in all (unverified)"),
    "tract_phases_per_phase": dict(axes=["distill.schedule"], key=n_phases, paper={},
                                   note="TRACT, fixed length per phase: no numbers found"),
    "btd_vs_tract": dict(axes=["distill.method"], key=lambda p: p["distill.method"],
                         paper={"btd": 5.95, "tract": 6.8},
                         note="binary schedule at 48M samples per phase (unverified)"),
    "pd_updates_per_phase": dict(axes=["distill.updates_per_phase"], key=lambda p: int(p["distill.updates_per_phase"]),
                                 paper={}, note="PD section 5.3: plot only"),
    "pd_step_factor": dict(axes=["distill.schedule"], key=n_phases, paper={}, note="PD section 5.3: plot only"),
    "pd_param_weighting": dict(axes=["distill.parameterization", "distill.weighting"], layout="teacher",
                               key=lambda p: (p["distill.parameterization"], p["distill.weighting"]),
                               paper=PD_TABLE1,
                               note="PD Table 1, undistilled teacher, FID stochastic / DDIM sampler"),
    "tract_vs_btd_budget": dict(axes=["recipe", "budget"], key=lambda p: (recipe(p), int(p["budget"])), paper={},
                                extra=[("teacher gap at the student's steps", "teacher_gap")],
                                note="TRACT section 5: 1024->32->1 (FID 5.24) beats binary BTD (5.95) at 96M "
                                     "samples; no budget sweep published"),
    "tract_recipe_keys": dict(axes=["ml-tract setting"], key=mltract_key, paper={}, spread=True,
                              extra=[("teacher gap at the student's steps", "teacher_gap")],
                              note="no paper numbers: ours (distill=tract) with one of ml-tract's settings at a time "
                                   "(none = ours, all = distill=tract_mltract; docs/recipes.md)"),
    "tract_teacher_family": dict(axes=["diffusion.family"], key=lambda p: p["diffusion.family"],
                                 paper={"vp": 5.02, "edm": 3.78},
                                 extra=[("teacher gap at the student's steps", "teacher_gap"),
                                        ("teacher pixel FD at its base steps", "teacher_pixel_fd_base")],
                                 note="TRACT 1-step FID, CIFAR-10: VP/DDIM teacher 5.02 at 96M samples (Table 1, "
                                      "unverified), EDM/Heun teacher 3.78 at 256M (its EDM tables); gaps are to each "
                                      "family's own teacher, so compare pixel FD (or FID) across rows"),
    "cond_tract_vs_btd": dict(axes=["distill.method"], layout="cell_steps", key=lambda p: p["distill.method"],
                              steps=[1, 2, 4], paper={},
                              note="class-conditional digits (DESIGN 3.10): TRACT [256, 16, 1] vs BTD's binary schedule; "
                                   "class accuracy by a logistic regression on the digits' pixels; no paper numbers "
                                   "(both papers' conditional runs are ImageNet-64 FIDs)"),
    "tract_edm_cifar10": dict(axes=["steps"], layout="steps", key=lambda p: int(p["seed"]), paper={1: 3.78, 2: 3.32},
                              note="TRACT with NVlabs' EDM teacher (edm-cifar10-32x32-uncond-ve.pkl), CIFAR-10 FID at 50k "
                                   "samples against EDM's reference statistics; the paper's 2-step number is a 40 -> 2 run"),
    "tract_edm_imagenet64": dict(axes=["steps"], layout="steps", key=lambda p: int(p["seed"]), paper={1: 7.43, 2: 4.97},
                                 note="TRACT with NVlabs' class-conditional EDM teacher (edm-imagenet-64x64-cond-adm.pkl), "
                                      "ImageNet-64 FID at 50k samples against EDM's reference statistics"),
    "three_methods": dict(axes=["distill.method"], layout="cell_steps", key=lambda p: p["distill.method"],
                          steps=[1, 2, 4], columns=("gap", "teacher_gap", "pixel_fd", "fid", "class_acc"), paper={},
                          note="BTD vs TRACT vs consistency distillation from one digits teacher, 600 updates each at "
                               "batch 128, gaps to the teacher's 256-step samples; no paper numbers on digits. The gap "
                               "pairs a sample with the teacher's from the same noise: multistep consistency sampling "
                               "draws fresh noise at each step, so compare its 2 and 4 steps by pixel FD (or FID)"),
    "three_methods_edm": dict(axes=["distill.method"], layout="cell_steps", key=lambda p: p["distill.method"],
                              steps=[1, 2, 4], columns=("gap", "teacher_gap", "fid"), paper=THREE_METHODS_CIFAR10,
                              note="CIFAR-10 FID at 50k samples from EDM's teacher: PD as cited by sCM (8.34 / 5.58), "
                                   "TRACT (3.78 / 3.32), CD with LPIPS (3.55 / 2.93; ours: l2 or pseudo-Huber, LPIPS's "
                                   "weights are a download)"),
    "pd_fid_vs_steps": dict(axes=["steps"], layout="steps", key=lambda p: int(p["seed"]),
                            paper={1: 9.12, 2: 4.51, 4: 3.00, 8: 2.57},
                            note="PD Table 2, distilled students' FID (the DDIM / stochastic curves of Fig. 4 "
                                 "are plot only)"),
}
METRICS = ("gap", "pixel_fd", "fid", "kid")
PHASE_METRICS = ("gap", "teacher_gap", "pixel_fd", "teacher_pixel_fd", "teacher_pixel_fd_ancestral",
                 "teacher_ancestral_gamma", "fid", "kid")
TEACHER_METRICS = ("teacher_pixel_fd_base_ancestral", "teacher_pixel_fd_base")
