"""The ServerApp that ``flwr run .`` loads (``server.app:app``)."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedpriv.config import RunConfig
from server.federation import run_federation
from server.reporting import LogReporter, Reporter
from server.rundir import RunDirectory, default_run_dir

__all__ = ["app", "make_server_app"]

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Validate the run config, create the run directory and run the federation.

    With ``resume = true`` and ``run-dir`` naming an existing run, the run continues
    from its last checkpoint under the configuration it recorded (a restarted
    SuperLink, a killed ServerApp).
    """
    cfg = RunConfig.from_mapping(dict(context.run_config)).resolved()
    if cfg.deployment.resume:
        if not cfg.deployment.run_dir:
            raise ValueError("resume = true needs run-dir, the run directory to continue")
        run_dir = RunDirectory(cfg.deployment.run_dir).reopen()
        scenario, flat = run_dir.read_config()
        cfg = RunConfig.from_mapping(flat).resolved()
        run_federation(grid, cfg, run_dir, scenario=scenario, reporter=LogReporter(),
                       resume=True)
        return
    path = cfg.deployment.run_dir or default_run_dir(f"flwr-{context.run_id}")
    run_dir = RunDirectory(path).create()
    cfg = cfg.with_values(run_dir=str(run_dir.path.resolve()),  # client ledgers
                          run_id=run_dir.path.name)
    run_dir.write_config(cfg.to_flat(), scenario="flwr-run")
    run_federation(grid, cfg, run_dir, scenario="flwr-run", reporter=LogReporter())


def make_server_app(
    cfg: RunConfig, run_dir: RunDirectory, *, scenario: str, reporter: Reporter,
    resume: bool = False,
) -> ServerApp:
    """A ServerApp bound to an already validated config and created run directory.

    ``fedpriv simulate`` uses this: the config was checked before Ray started, and the
    run's progress goes to ``reporter``.
    """
    bound = ServerApp()

    @bound.main()
    def _main(grid: Grid, context: Context) -> None:
        run_federation(grid, cfg, run_dir, scenario=scenario, reporter=reporter,
                       resume=resume)

    return bound
