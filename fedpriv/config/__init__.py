"""The run configuration: one schema for the CLI, the ServerApp and the ClientApp.

:class:`RunConfig` composes one frozen section per concern (``data``, ``model``,
``training``, ``privacy``, ``secagg``, ``deployment``: :mod:`fedpriv.config.sections`);
the run-config keys stay flat and kebab-case everywhere a user or Flower sees them.
:mod:`fedpriv.config.choices` holds the enums, :mod:`fedpriv.config.values` the parsing
and range checks of one key.
"""

from fedpriv.config.choices import (
    LORA_TARGETS,
    MODELS_FOR,
    NEEDS_INDIVIDUAL_UPDATES,
    PARTITIONS_FOR,
    ClipMode,
    Dataset,
    DdpMechanism,
    Device,
    DpMode,
    LmBase,
    Model,
    Partition,
    StrategyName,
)
from fedpriv.config.run import SECTIONS, RunConfig, default_count_stddev
from fedpriv.config.sections import (
    DataConfig,
    DeploymentConfig,
    ModelConfig,
    PrivacyConfig,
    SecAggConfig,
    TrainingConfig,
)
from fedpriv.config.values import ConfigError

__all__ = [
    "LORA_TARGETS",
    "MODELS_FOR",
    "NEEDS_INDIVIDUAL_UPDATES",
    "PARTITIONS_FOR",
    "SECTIONS",
    "ClipMode",
    "ConfigError",
    "DataConfig",
    "Dataset",
    "DdpMechanism",
    "DeploymentConfig",
    "Device",
    "DpMode",
    "LmBase",
    "Model",
    "ModelConfig",
    "Partition",
    "PrivacyConfig",
    "RunConfig",
    "SecAggConfig",
    "StrategyName",
    "TrainingConfig",
    "default_count_stddev",
]
