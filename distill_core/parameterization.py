"""The four network parameterisations of Progressive Distillation (DESIGN 3.2).

The network's raw output is turned into x_hat here and nowhere else. `both` has two heads
(x_tilde, eps_tilde) which the model emits stacked along the channel axis; `split_heads`
undoes that.
"""
import torch

PARAMETERIZATIONS = ("eps", "x", "both", "v")


def check(kind: str) -> str:
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}; got {kind!r}")
    return kind


def output_heads(kind: str) -> int:
    """How many image-shaped outputs the network head must produce."""
    return 2 if check(kind) == "both" else 1


def split_heads(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return out.chunk(2, dim=1)


def x_from_output(kind: str, out: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_hat from the network output; alpha and sigma are already broadcast against z."""
    if kind == "x":
        return out
    if kind == "eps":
        return (z - sigma * out) / alpha
    if kind == "v":
        return alpha * z - sigma * out
    if kind == "both":
        x_tilde, eps_tilde = split_heads(out)
        return sigma ** 2 * x_tilde + alpha * (z - sigma * eps_tilde)
    raise ValueError(check(kind))


def output_from_target(kind: str, x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The network output that is exactly right for data x and noise eps (for round-trip checks)."""
    if kind == "x":
        return x
    if kind == "eps":
        return eps
    if kind == "v":
        return alpha * eps - sigma * x
    if kind == "both":
        return torch.cat([x, eps], dim=1)
    raise ValueError(check(kind))


def eps_from_x(z: torch.Tensor, x_hat: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """eps_hat = (z - alpha x_hat) / sigma, the same for every parameterisation."""
    return (z - alpha * x_hat) / sigma
