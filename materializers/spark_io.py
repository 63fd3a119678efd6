"""Spark reads and writes of the dataset format, on any artifact store.

Local paths and stores Spark's Hadoop connectors reach (`s3a://` with hadoop-aws, `gs://`
with the GCS connector) are read and written natively. Without the connector jar (the
pyspark wheel has none), the executors do it in Python, credentials and endpoint from the
artifact store: an embedded (`local[...]`) engine writes the part files natively to a local
staging directory, which its executors share, and Python tasks upload them with fsspec; a
cluster's `mapInArrow` tasks write them with pyarrow + fsspec. Reads are `mapInArrow` tasks.
Either way no row passes through the driver; which way was taken is recorded in the
manifest (`written_via`) and logged for reads.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, List, Tuple

from zenml_compute_engines.flavors.storage import fsspec_storage_options, spark_path
from zenml_compute_engines.materializers import dataset
from zenml_compute_engines.materializers.readers import paths

if TYPE_CHECKING:
    import pyarrow
    from pyspark.sql import DataFrame, SparkSession
    from zenml.artifact_stores import BaseArtifactStore

logger = logging.getLogger(__name__)

LOCAL = "spark (local filesystem)"
PYTHON = "spark executors (pyarrow + fsspec)"
STAGED = "spark (local staging) + executors (fsspec upload)"
# Messages of a Hadoop filesystem Spark has no connector for.
_NO_CONNECTOR = ("No FileSystem for scheme", "ClassNotFoundException", "UnsupportedFileSystemException")
# (session, scheme) pairs known to lack the connector, so we do not try it again.
_WITHOUT_CONNECTOR: set = set()


def _scheme(path: str) -> str:
    return path.split("://", 1)[0] if "://" in path else "file"


def _session_for_loading() -> "SparkSession":
    """The step's engine; outside a step the active stack's, else a local session."""
    from pyspark.sql import SparkSession

    from zenml_compute_engines.flavors.context import compute_engine
    from zenml_compute_engines.flavors.engine import EngineError

    try:
        return compute_engine("spark").session()
    except EngineError:
        return SparkSession.builder.master("local[*]").getOrCreate()


@contextmanager
def _sql_conf(session: "SparkSession", key: str, value: str) -> Iterator[None]:
    """A runtime SQL option for the duration of one action, restored afterwards."""
    previous = session.conf.get(key, None)
    session.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            session.conf.unset(key)
        else:
            session.conf.set(key, previous)


def _missing_connector(error: BaseException) -> bool:
    return any(marker in str(error) for marker in _NO_CONNECTOR)


def _tell_the_step(key: str, via: str) -> None:
    """Record on the running step (if any) which way Spark moved a dataset's files."""
    from zenml_compute_engines.flavors.engine import current_step_context

    if current_step_context() is None:
        return
    from zenml import log_metadata

    try:
        log_metadata(metadata={key: via})
    except Exception as e:  # metadata is a courtesy; the data moved all the same
        logger.debug("Could not record %s on the step: %s", key, e)


# ---- writing --------------------------------------------------------------------------------


def write(df: "DataFrame", store: "BaseArtifactStore", uri: str) -> "dataset.Manifest":
    """Write `df` as the dataset at `uri` and commit its manifest."""
    session = df.sparkSession
    directory = dataset.data_dir(uri)
    scheme = _scheme(directory)
    via = LOCAL if scheme == "file" else f"spark (hadoop {spark_path(directory).split('://')[0]})"
    if scheme != "file" and (id(session), scheme) in _WITHOUT_CONNECTOR:
        via = _write_without_connector(df, store, directory)
    else:
        try:
            _write_natively(df, spark_path(directory))
        except Exception as e:
            if scheme == "file" or not _missing_connector(e):
                raise
            _WITHOUT_CONNECTOR.add((id(session), scheme))
            logger.info("Spark has no Hadoop connector for %s://; its executors write with fsspec.", scheme)
            via = _write_without_connector(df, store, directory)
    schema = _arrow_schema(df)
    manifest = dataset.commit(store, uri, engine="spark", engine_version=session.version, written_via=via, schema=schema)
    _tell_the_step("dataset_written_via", via)
    return manifest


def _write_natively(df: "DataFrame", path: str) -> None:
    # Timestamps as UTC instants (not Spark's legacy INT96), which every engine reads.
    with _sql_conf(df.sparkSession, "spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS"):
        df.write.mode("overwrite").parquet(path)


def _executors_share_our_disk(session: "SparkSession") -> bool:
    """A `local[...]` engine's executors run in this machine's JVM: a directory the driver
    names is theirs too. (Spark Connect has no SparkContext here; its server may be anywhere.)"""
    try:
        return str(session.sparkContext.master).startswith("local")
    except Exception:
        return False


def _write_without_connector(df: "DataFrame", store: "BaseArtifactStore", directory: str) -> str:
    if _executors_share_our_disk(df.sparkSession):
        return _write_staged(df, store, directory)
    return _write_with_python(df, store, directory)


def _write_staged(df: "DataFrame", store: "BaseArtifactStore", directory: str) -> str:
    """Spark's own parquet writer fills a local directory; Python tasks upload its part files.

    No row crosses from the JVM to Python (that crossing costs as much as the upload). The
    staged copy is removed whether or not the upload succeeds; it lives in the driver's own
    scratch directory, which Spark deletes when it stops, so not even a killed pipeline
    process leaves it behind (its JVM exits when its parent goes).
    """
    import os
    import shutil
    import tempfile
    from pathlib import Path

    protocol = _scheme(directory)
    options = fsspec_storage_options(store)
    context = df.sparkSession.sparkContext
    scratch = context._jvm.org.apache.spark.SparkFiles.getRootDirectory()
    staging = Path(tempfile.mkdtemp(prefix="zenml-dataset-", dir=scratch))
    local = staging / "data"

    def upload(batch: Iterator[str]) -> Iterator[str]:
        import fsspec

        filesystem = fsspec.filesystem(protocol, **options)
        for name in batch:
            filesystem.put_file(str(local / name), f"{directory}/{name}")
            yield name

    try:
        _write_natively(df, local.as_uri())
        names = sorted(name for name in os.listdir(local) if name.startswith("part-"))
        if names:
            context.parallelize(names, len(names)).mapPartitions(upload).count()
        else:
            _write_empty_part(df, store, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return STAGED


def _write_empty_part(df: "DataFrame", store: "BaseArtifactStore", directory: str) -> None:
    """An empty DataFrame still keeps its columns: one empty part file."""
    import pyarrow.parquet as pq

    store.makedirs(directory)
    with store.open(f"{directory}/part-00000-empty.parquet", "wb") as handle:
        pq.write_table(_arrow_schema(df).empty_table(), handle)


def _arrow_schema(df: "DataFrame") -> "pyarrow.Schema":
    import inspect

    from pyspark.sql.pandas.types import to_arrow_schema

    # Spark timestamps are UTC instants. pyspark 4 asks for the zone (none by default);
    # 3.5 has no such argument and always converts them to UTC.
    if "timezone" in inspect.signature(to_arrow_schema).parameters:
        return to_arrow_schema(df.schema, timezone="UTC")
    return to_arrow_schema(df.schema)


# Row groups of the part files the executors write: large enough that readers pay little
# per group, small enough to buffer in a Python worker.
ROW_GROUP_BYTES = 64 << 20


def _write_with_python(df: "DataFrame", store: "BaseArtifactStore", directory: str) -> str:
    """Each partition's task writes its own part file; only file names come back."""
    protocol = _scheme(directory)
    options = fsspec_storage_options(store)
    row_group_bytes = ROW_GROUP_BYTES

    def write_partition(batches: Iterator[Any]) -> Iterator[Any]:
        import uuid

        import fsspec
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        context = TaskContext.get()
        index = context.partitionId() if context is not None else 0
        name = f"part-{index:05d}-{uuid.uuid4().hex[:12]}.parquet"
        filesystem = fsspec.filesystem(protocol, **options)
        writer = handle = None
        rows = 0
        pending: List[Any] = []
        pending_bytes = 0

        def write_row_group() -> None:
            nonlocal writer, handle, pending_bytes
            if writer is None:
                handle = filesystem.open(f"{directory}/{name}", "wb")
                writer = pq.ParquetWriter(handle, pending[0].schema)
            group = pa.Table.from_batches(pending)
            writer.write_table(group, row_group_size=group.num_rows)
            pending.clear()
            pending_bytes = 0

        try:
            # Spark hands over batches of `arrow.maxRecordsPerBatch` (10,000) rows; one row
            # group each would make every reader pay per-group overhead, so gather them.
            for batch in batches:
                pending.append(batch)
                pending_bytes += batch.nbytes
                rows += batch.num_rows
                if pending_bytes >= row_group_bytes:
                    write_row_group()
            if pending:
                write_row_group()
        finally:
            if writer is not None:
                writer.close()
            if handle is not None:
                handle.close()
        if rows:
            yield pa.RecordBatch.from_pydict({"path": [name], "rows": [rows]})

    written = df.mapInArrow(write_partition, "path string, rows long").collect()
    if not written:
        _write_empty_part(df, store, directory)
    return PYTHON


# ---- reading --------------------------------------------------------------------------------


def read(store: "BaseArtifactStore", uri: str, manifest: "dataset.Manifest") -> "DataFrame":
    """The dataset at `uri` as a lazy Spark DataFrame on the step's session."""
    session = _session_for_loading()
    arrow_schema, spark_schema = spark_schemas(manifest)
    files = paths(uri, manifest)
    scheme = _scheme(uri)
    if not files:
        return session.createDataFrame([], spark_schema)
    # Spark's parquet reader refuses nanosecond timestamps (pandas' and Arrow's default);
    # the executors' Python reader truncates them to Spark's microseconds.
    nanoseconds = any(_has_nanoseconds(field.type) for field in manifest.arrow())
    if not nanoseconds and (scheme == "file" or (id(session), scheme) not in _WITHOUT_CONNECTOR):
        try:
            frame = session.read.schema(spark_schema).parquet(*[spark_path(p) for p in files])
        except Exception as e:
            if scheme == "file" or not _missing_connector(e):
                raise
            _WITHOUT_CONNECTOR.add((id(session), scheme))
            logger.info("Spark has no Hadoop connector for %s://; its executors read with pyarrow + fsspec.", scheme)
        else:
            _tell_the_step("dataset_read_via", LOCAL if scheme == "file" else f"spark (hadoop {spark_path(uri).split('://')[0]})")
            return frame
    _tell_the_step("dataset_read_via", PYTHON)
    return _read_with_python(session, store, files, arrow_schema, spark_schema)


def _read_with_python(
    session: "SparkSession", store: "BaseArtifactStore", files: List[str], arrow_schema: Any, spark_schema: Any
) -> "DataFrame":
    """One task per part file; each reads its file on an executor."""
    protocol = _scheme(files[0])
    options = fsspec_storage_options(store)
    target = arrow_schema

    def read_files(batches: Iterator[Any]) -> Iterator[Any]:
        import fsspec
        import pyarrow.parquet as pq

        filesystem = fsspec.filesystem(protocol, **options)
        for batch in batches:
            for index in batch.column(0).to_pylist():
                with filesystem.open(files[index], "rb") as handle:
                    for part in pq.ParquetFile(handle).iter_batches():
                        yield _cast_batch(part, target)

    count = len(files)
    return session.range(0, count, 1, count).mapInArrow(read_files, spark_schema)


def _cast_batch(batch: Any, schema: Any) -> Any:
    import pyarrow as pa

    table = pa.Table.from_batches([batch]).select(schema.names)
    if not table.schema.equals(schema):
        table = table.cast(schema, safe=False)  # ns -> us timestamps truncate, as Spark must
    return table.combine_chunks().to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema)


def _has_nanoseconds(arrow_type: Any) -> bool:
    import pyarrow.types as t

    if t.is_timestamp(arrow_type):
        return arrow_type.unit == "ns"
    if t.is_list(arrow_type) or t.is_large_list(arrow_type):
        return _has_nanoseconds(arrow_type.value_type)
    if t.is_struct(arrow_type):
        return any(_has_nanoseconds(f.type) for f in arrow_type)
    return False


# Unsigned and half-precision types Spark lacks, widened the way its parquet reader does.
def _widened(arrow_type: Any) -> Any:
    import pyarrow as pa
    import pyarrow.types as t

    widen = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(), pa.uint64(): pa.decimal128(20, 0),
             pa.float16(): pa.float32()}
    if arrow_type in widen:
        return widen[arrow_type]
    if t.is_timestamp(arrow_type) and arrow_type.unit == "ns":
        return pa.timestamp("us", tz=arrow_type.tz)
    if t.is_decimal(arrow_type) and arrow_type.precision <= 38:
        return pa.decimal128(arrow_type.precision, arrow_type.scale)
    if t.is_list(arrow_type):
        return pa.list_(arrow_type.value_field.with_type(_widened(arrow_type.value_type)))
    if t.is_struct(arrow_type):
        return pa.struct([f.with_type(_widened(f.type)) for f in arrow_type])
    if t.is_map(arrow_type):
        return pa.map_(_widened(arrow_type.key_type), _widened(arrow_type.item_type))
    return arrow_type


def spark_schemas(manifest: "dataset.Manifest") -> Tuple[Any, Any]:
    """The Arrow schema Spark's tasks produce and the matching Spark schema; a column
    Spark cannot represent is named in a TypeError."""
    import pyarrow as pa
    import pyarrow.types as t
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    arrow_fields, spark_fields = [], []
    for field in manifest.arrow():
        widened = _widened(field.type)
        try:
            if t.is_decimal(widened) and widened.precision > 38:
                raise TypeError("Spark decimals hold at most 38 digits")
            spark_type = from_arrow_type(widened)
        except Exception as e:
            raise TypeError(
                f"Column {field.name!r} has type {field.type}, which Spark cannot represent ({e}). "
                "Cast it before saving, or load this artifact with another engine."
            ) from None
        arrow_fields.append(field.with_type(widened))
        spark_fields.append(StructField(field.name, spark_type, nullable=True))
    return pa.schema(arrow_fields), StructType(spark_fields)

