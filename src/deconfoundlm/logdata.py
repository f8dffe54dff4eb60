"""A log bound to its column roles once: the data object the commands take.

:class:`LogData` holds where the log is (a file, a DataFrame, or with ``--dask`` a folder or glob
of Parquet files read by a cluster), which column plays which role, and where it is processed.
Its operations are the steps every command takes in the same order: check the options before
anything is read (:meth:`LogData.check`), read and validate the rows with the family resolved
(:meth:`LogData.read`), or hand the log to its cluster (:meth:`LogData.cluster`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from deconfoundlm.checks import check_folds
from deconfoundlm.errors import UserError
from deconfoundlm.features.text import check_encoder_name
from deconfoundlm.glm.families import check_log_family, get_family
from deconfoundlm.logs.roles import ColumnRoles
from deconfoundlm.logs.validate import ObservationalLog, load_log, validate_log
from deconfoundlm.options import label
from deconfoundlm.outputs import REWARD_DIR, OutputKind, check_output


@dataclass
class LogData:
    """A log and its column roles (see the module).

    Parameters
    ----------
    source : str, Path or DataFrame
        A CSV / Parquet / JSONL file, a DataFrame, or with ``dask`` a folder or glob of Parquet files.
    roles : ColumnRoles
        Which column is the text, the outcome, the trials, the weights, the confounders.
    dask : str, optional
        A Dask scheduler address or ``local[:N[:MEMORY]]``: the log is read and processed there.
    """

    source: str | Path | pd.DataFrame
    roles: ColumnRoles
    dask: str | None = None

    @classmethod
    def of(cls, source: str | Path | pd.DataFrame, config: Any) -> LogData:
        """The log ``source`` with the roles (and the ``dask`` cluster, if any) a command's config names."""
        return cls(source, ColumnRoles.of(config), getattr(config, "dask", None))

    def inputs(self, encoder: Any = None) -> list:
        """The paths this command reads (an output must never touch them): the log and a local encoder folder."""
        inputs: list = [None if isinstance(self.source, pd.DataFrame) else self.source]
        if isinstance(encoder, str) and Path(encoder).exists():
            inputs.append(encoder)
        return inputs

    def check(self, config: Any, output_kind: OutputKind = REWARD_DIR, need_confounders: str | None = None) -> list:
        """The options of ``config`` before anything is read: the encoder's name, the family's, the
        output (``config.out``, of ``output_kind``), the confounders the command needs (the error
        ``need_confounders``) and, on a cluster, the ``--dask`` value and a source in files.
        Returns the inputs (:meth:`inputs`)."""
        encoder = getattr(config, "encoder", None)
        if isinstance(encoder, str):
            check_encoder_name(encoder)
        if getattr(config, "family", "auto") != "auto":
            get_family(config.family)
        inputs = self.inputs(encoder)
        if getattr(config, "out", None) is not None:  # fail before any work, not after
            check_output(config.out, config.force, output_kind, inputs=inputs)
        if need_confounders and not self.roles.confounders:
            raise UserError(need_confounders)
        if self.dask is not None:
            from deconfoundlm.distributed.cluster import check_dask

            check_dask(self.dask)
            if isinstance(self.source, pd.DataFrame):
                raise UserError(f"{label('dask')} reads the log from files (Parquet, CSV, JSONL), not from a DataFrame in "
                                "memory")
        return inputs

    def read(self, family: str = "auto", cv: int = 5) -> tuple[ObservationalLog, str]:
        """The validated log (rows, types, the family's outcome rules, enough rows for ``cv``
        folds) and its family (``auto`` resolved from the outcome's values)."""
        source = self.source
        log = validate_log(source, self.roles) if isinstance(source, pd.DataFrame) else load_log(source, self.roles)
        check_folds(cv, len(log))
        return log, check_log_family(log, family)

    @contextmanager
    def cluster(self) -> Iterator[Any]:
        """A ``distributed.Client`` of the log's ``--dask`` cluster, closed (and a local cluster
        stopped) on exit."""
        from deconfoundlm.distributed.cluster import dask_client

        if self.dask is None:
            raise UserError(f"this log is processed in memory: give {label('dask')} to use a cluster")
        with dask_client(self.dask) as client:
            yield client
