"""`python -m sweeps.bench`: what a distillation step costs against its floor, tracking's overhead, scaling over ranks."""
