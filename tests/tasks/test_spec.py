"""task_spec: the shape a model and a device's data need, without loading the data set."""

import pytest

from fedpriv.config import RunConfig
from fedpriv.tasks import TaskSpec, build_task_model, load_task_data, task_spec
from tests.tasks.test_fashion_mnist import write_fashion


@pytest.mark.parametrize("values", [
    {"dataset": "digits"},
    {"dataset": "synthetic", "clients": 5},
    {"dataset": "fashion-mnist"},
])
def test_the_spec_is_what_loading_the_data_gives(tmp_path, values):
    if values["dataset"] == "fashion-mnist":
        write_fashion(tmp_path)
        values = {**values, "dataset-dir": str(tmp_path)}
    cfg = RunConfig.from_mapping(values)
    data = load_task_data(cfg)
    assert task_spec(cfg) == TaskSpec(data.feature_shape, data.num_classes,
                                      data.feature_range)
    built, from_data = build_task_model(cfg), build_task_model(cfg, data)
    assert [t.shape for t in built.state_dict().values()] == [
        t.shape for t in from_data.state_dict().values()]


def test_fashion_mnist_needs_no_files_to_build_its_model(tmp_path):
    # A deployed device trains on its own .npz files: it must not need the data set.
    cfg = RunConfig.from_mapping({"dataset": "fashion-mnist",
                                  "dataset-dir": str(tmp_path / "absent")})
    assert task_spec(cfg).feature_shape == (784,)
    assert sum(t.numel() for t in build_task_model(cfg).parameters()) > 0
