"""Run a federation on Flower's simulation engine (Ray), in this process.

The ServerApp runs in a thread of this process (so progress reaches the terminal
directly); each simulated SuperNode's ClientApp runs in a Ray actor. Ray and Flower are
kept on loopback and quiet.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fedpriv.config import Device, RunConfig
from server.reporting import Reporter
from server.rundir import RunDirectory

__all__ = ["FLOWER_LOG", "RAY_ADDRESS", "loopback_environment", "simulate"]

# Environment that keeps Ray on 127.0.0.1 and every component from phoning home.
_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}
_DEFAULT_GPU_FRACTION = 0.2
#: Ray's own variable naming a running cluster (``ray start --head`` prints it).
RAY_ADDRESS = "RAY_ADDRESS"
#: Flower's own log of a simulated run, in the run directory.
FLOWER_LOG = "flower.log"


def loopback_environment() -> None:
    """Set the variables that bind Ray to loopback and disable telemetry."""
    for key, value in _ENV.items():
        os.environ.setdefault(key, value)


class _DropDeprecation(logging.Filter):
    """Hide Flower's notice that the Python simulation API is deprecated."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "run_simulation" not in record.getMessage()


def _backend_config(cfg: RunConfig) -> dict[str, Any]:
    """Flower's Ray backend config: a private local Ray, or the cluster ``RAY_ADDRESS`` names.

    Without ``RAY_ADDRESS`` the run starts its own Ray on loopback with this machine's
    CPUs (``address = "local"``: never a cluster someone else started on this machine).
    With it (``ray start --head`` printed the address; see docs/scale.md) the run joins
    that cluster, whose nodes declared their own CPUs and GPUs: Ray refuses ``num_cpus``
    and ``num_gpus`` when connecting, so only the per-client resources are set, and Ray
    schedules ``client-cpus``-sized ClientApp actors on every node.
    """
    import torch

    gpus = 0.0
    if cfg.deployment.device is not Device.CPU and torch.cuda.is_available():
        gpus = cfg.deployment.client_gpu_fraction or _DEFAULT_GPU_FRACTION
    quiet = {"logging_level": logging.ERROR, "log_to_driver": True}
    address = os.environ.get(RAY_ADDRESS, "").strip()
    if address:
        init_args: dict[str, Any] = {"address": address, **quiet}
        if cfg.deployment.device is not Device.CPU and not gpus:
            gpus = cfg.deployment.client_gpu_fraction  # the cluster's GPUs, not this node's
    else:
        init_args = {
            "address": "local",
            "num_cpus": os.cpu_count() or 1,
            "num_gpus": torch.cuda.device_count() if gpus else 0,
            "_node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            **quiet,
        }
    return {
        "client_resources": {"num_cpus": cfg.deployment.client_cpus, "num_gpus": gpus},
        "init_args": init_args,
    }


def simulate(
    cfg: RunConfig,
    run_dir: RunDirectory,
    *,
    scenario: str,
    reporter: Reporter,
    verbose: bool = False,
    resume: bool = False,
) -> None:
    """Run ``cfg`` on the simulation engine; results land in ``run_dir``.

    ``cfg`` must already be validated and ``run_dir`` created (or, ``resume``, hold the
    run to continue): nothing here re-checks user input. Raises whatever the ServerApp
    raised if the run failed.
    """
    loopback_environment()
    from flwr.simulation import run_simulation

    from client.app import app as client_app
    from server.app import make_server_app

    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    deprecation = _DropDeprecation()
    consoles = list(flwr_logger.handlers)
    console_levels = [h.level for h in consoles]
    for handler in consoles:  # the terminal: progress lines, warnings and errors only
        handler.addFilter(deprecation)
        if not verbose:
            handler.setLevel(logging.WARNING)
    # Everything Flower says goes to RUN_DIR/flower.log, kept with the run.
    log_file = logging.FileHandler(run_dir.path / FLOWER_LOG, encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    flwr_logger.addHandler(log_file)
    flwr_logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Not also through the root logger: a library that logs through it once (absl, for
    # dp-accounting's RDP convergence notice) gives it a console handler, which would
    # print every INFO line of Flower's unfiltered.
    propagate, flwr_logger.propagate = flwr_logger.propagate, False
    try:
        run_simulation(
            server_app=make_server_app(cfg, run_dir, scenario=scenario, reporter=reporter,
                                       resume=resume),
            client_app=client_app,
            num_supernodes=cfg.training.clients + cfg.privacy.canaries,
            backend_config=_backend_config(cfg),
            verbose_logging=verbose,
        )
    finally:
        flwr_logger.propagate = propagate
        flwr_logger.setLevel(level)
        flwr_logger.removeHandler(log_file)
        log_file.close()
        for handler, old in zip(consoles, console_levels, strict=True):
            handler.removeFilter(deprecation)
            handler.setLevel(old)
