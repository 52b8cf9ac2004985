"""Multi-node runs (`trainer.num_nodes` > 1): a launcher must start them on every machine.

Lightning joins the processes that a launcher starts (torchrun, SLURM's srun, LSF, or a manual
launch that sets the variables itself) into one run. Started without one, a multi-node run
would wait for the other machines until the rendezvous times out (half an hour): that is
refused at once, from the environment alone (no torch import), before any work is done.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mlfactory.errors import ConfigError

# What each launcher sets in every process it starts (Lightning's cluster environments detect
# them the same way): torchrun (and Kubeflow's PyTorchJob) RANK and WORLD_SIZE; a manual launch
# NODE_RANK; SLURM SLURM_NTASKS; LSF LSB_JOBID.
LAUNCHED_BY = (("RANK", "WORLD_SIZE"), ("NODE_RANK",), ("SLURM_NTASKS",), ("LSB_JOBID",))
# Where a process's rank is read from before the Trainer exists, first found wins: Lightning's
# order (`lightning_fabric.utilities.rank_zero._get_rank`, what `rank_zero_only.rank` starts as).
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def owns_the_run(environ: Mapping[str, str] | None = None) -> bool:
    """True in the process that owns the run, from the environment alone (no torch import):
    the only process, or rank 0 of a distributed job, as Lightning reads the rank at start-up.

    Raises:
        ConfigError: the variable that gives the rank is not a whole number.
    """
    env = os.environ if environ is None else environ
    name = next((name for name in RANK_VARIABLES if name in env), None)
    if name is None:
        return True
    try:
        return int(env[name]) == 0
    except ValueError:
        raise ConfigError(
            f"{name}={env[name]!r}: a process's rank must be a whole number"
        ) from None


def check_launched(num_nodes: int, environ: Mapping[str, str] | None = None) -> None:
    """Refuse a multi-node run that no launcher started.

    Raises:
        ConfigError: `num_nodes` > 1 and the environment shows no launcher.
    """
    env = os.environ if environ is None else environ
    if num_nodes <= 1 or any(all(name in env for name in names) for names in LAUNCHED_BY):
        return
    raise ConfigError(
        f"trainer.num_nodes={num_nodes}: start this command on each of the {num_nodes} machines "
        f"with a launcher (torchrun --nnodes={num_nodes} ..., or srun under SLURM); started "
        "alone it would wait for the other machines"
    )
