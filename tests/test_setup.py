"""The environment traps of DESIGN section 5, checked on the installed set."""
import optuna
import torch


def test_optuna_major_version_and_sweeper_plugin_loads():
    assert int(optuna.__version__.split(".")[0]) >= 4
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper
    names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]
    assert "OptunaSweeper" in names
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper  # imports against this Optuna
    assert OptunaSweeper


def test_torch_and_torchvision_import_together():
    import torchvision
    from torchvision.ops import nms  # fails when torchvision does not match torch
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
    assert torchvision.__version__
