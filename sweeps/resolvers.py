"""OmegaConf resolvers the configs use (registered on import of `sweeps`)."""
from omegaconf import OmegaConf


def total_over_phases(total, schedule) -> int:
    """Updates per phase that keep the total fixed: total // number of phases."""
    return max(1, int(total) // max(1, len(list(schedule)) - 1))


# omegaconf 2.4 renamed register_new_resolver (now deprecated) to register_resolver
register = getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver
register("total_over_phases", total_over_phases, replace=True)
