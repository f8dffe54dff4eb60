"""Logs beyond one machine: reading, encoding, fitting, diagnosing and scoring on a Dask cluster
(``--dask ADDRESS`` or ``--dask local[:N]``). The fit is the in-memory solver's
(:mod:`deconfoundlm.glm.path`) over blocks held by the workers."""
