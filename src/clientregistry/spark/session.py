"""Starting a Spark session for the engine: local mode by default, or a cluster's master.

Local mode (``local[*]``) runs Spark inside this machine's JVM, its Python workers started
with this interpreter. With ``--spark-master spark://HOST:7077`` the same code runs on a
standalone cluster, whose executors need ``clientregistry[spark]`` installed in the Python
they run (``spark.pyspark.python``), and input and output paths every node can read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from clientregistry.errors import ClientRegistryError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"


def local_driver_memory(environ: Mapping[str, str] = os.environ) -> str | None:
    """The heap of a local-mode driver (which is the executor too): a quarter of the
    machine's memory, between 1 GB (Spark's default, too little once a million records'
    pairs are held) and 16 GB.

    None when the operator has chosen it Spark's own ways, ``SPARK_DRIVER_MEMORY`` or
    ``--driver-memory`` in ``PYSPARK_SUBMIT_ARGS``: a setting made here would override theirs.
    ``config`` of :func:`start_session` overrides it too."""
    if environ.get("SPARK_DRIVER_MEMORY", "").strip():
        return None
    if "--driver-memory" in environ.get("PYSPARK_SUBMIT_ARGS", ""):
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):  # (not on every platform)
        return "1g"
    gigabytes = max(1, min(16, total // 4 // 2**30))
    return f"{gigabytes}g"


class SparkUnavailable(ClientRegistryError):
    """pyspark is not installed, or Java cannot start."""


def require_pyspark() -> None:
    """Raise :class:`SparkUnavailable` with what to install when pyspark is missing."""
    try:
        import pyarrow  # noqa: F401
        import pyspark  # noqa: F401
    except ImportError as error:
        raise SparkUnavailable(
            f"--engine spark needs the optional extra: pip install 'clientregistry[spark]' "
            f"({error.name} is not installed)"
        ) from None


def start_session(
    master: str | None = None,
    *,
    local_dir: str | None = None,
    config: Mapping[str, str] | None = None,
    app_name: str = "clientregistry",
) -> SparkSession:
    """A Spark session for the engine (the existing one if this process has one).

    Spark's web UI is off and the driver listens on 127.0.0.1 in local mode (no fixed
    ports to clash over); ``config`` adds or overrides any Spark setting.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    master = master or DEFAULT_MASTER
    local = master.startswith("local")
    if local:
        # workers run this interpreter, which has clientregistry and its dependencies
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    settings = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        # Without a web UI nobody reads the state of finished jobs, stages, tasks and queries;
        # Spark keeps thousands of each by default, and a long session (a re-match's rounds,
        # a test session) filled the driver's heap with them.
        "spark.ui.retainedJobs": "50",
        "spark.ui.retainedStages": "50",
        "spark.ui.retainedTasks": "1000",
        "spark.sql.ui.retainedExecutions": "20",
        "spark.ui.dagGraph.retainedRootRDDs": "50",
        "spark.worker.ui.retainedExecutors": "10",
        "spark.worker.ui.retainedDrivers": "10",
    }
    if local:
        # The driver is the executor too: 1 GB (Spark's default) is too little once the pairs
        # and the state of earlier jobs are held.
        memory = local_driver_memory()
        if memory is not None:
            settings["spark.driver.memory"] = memory
        # Every broadcast join's hash table takes at least one memory page, and the driver
        # keeps it as long as the broadcast lives: at the default page size (up to 64 MB) a
        # FEBRL1 run left 1.2 GB of heap held; at 2 MB, 0.2 GB (a page holds any larger row).
        settings["spark.buffer.pageSize"] = "2m"
        settings["spark.driver.host"] = "127.0.0.1"
        settings["spark.driver.bindAddress"] = "127.0.0.1"
        # enough partitions that a million records' pairs spill little; adaptive execution
        # coalesces them again for small inputs
        settings["spark.sql.shuffle.partitions"] = "32"
    if local_dir is not None:
        settings["spark.local.dir"] = local_dir
        settings["spark.sql.warehouse.dir"] = os.path.join(local_dir, "warehouse")
    settings.update(config or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as error:  # the JVM did not start: no Java, a bad master URL
        raise SparkUnavailable(f"cannot start Spark ({master}): {error}") from None
    session.sparkContext.setLogLevel("WARN")
    return session
