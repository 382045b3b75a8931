"""The matching engine on Apache Spark, for files larger than one machine.

Installed with the optional extra ``clientregistry[spark]`` (pyspark, pyarrow, pandas). The
single-machine engine's own code does the matching: features and blocking keys from
:class:`~clientregistry.matching.matcher.Matcher`, pair scores from its scorer, and the
classification and clustering decisions from
:class:`~clientregistry.batch.dedupe.Deduplicator`. Spark adds what one machine cannot: the
blocking join, scoring spread over executors, and a distributed connected-components step
that cuts the records into independent groups (see :mod:`clientregistry.spark.engine`).
"""
