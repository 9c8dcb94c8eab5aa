"""Query results in S3 (``c.QueryService.result_store_class = "s3"``): every replica of
fort-query reads every query's result.

A result is written to a local spool file while the query runs (followers of the running query
read it there, on the replica running it), then uploaded to ``s3://<bucket>/<prefix><id>.arrows``
when it is complete and the spool file removed. Downloads stream the object in chunks; JSON
pages and CSV decode it batch by batch. Give the bucket a lifecycle rule a little longer than
`QueryService.result_ttl` as a backstop; fort-query removes expired results itself.

A sink discarded after its upload (a query cancelled at its very end) deletes the object. Spool
files a crash left behind (no live sink of this process, untouched for `spool_max_age`) are
removed by the orphan sweep at start.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from typing import Any, BinaryIO

from traitlets import Float, Unicode, default, validate

from .results import SUFFIX, FileSink, ResultStore

MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Sink(FileSink):
    """A :class:`FileSink` in the spool directory whose :meth:`commit` uploads the file."""

    def __init__(self, store: S3ResultStore, query_id: str, max_rows: int, max_bytes: int):
        super().__init__(os.path.join(store.spool_dir, query_id + SUFFIX), max_rows, max_bytes)
        self.store = store
        self.query_id = query_id
        self.uploading = False
        store.sink_opened(self.path)

    def commit(self) -> str:
        path = super().commit()
        self.uploading = True  # from here on, discard() deletes the object too
        try:
            self.store.client.upload_file(path, self.store.bucket, self.store.key(self.query_id))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            self.store.sink_closed(self.path)
        return self.store.location(self.query_id)

    def discard(self) -> None:
        """Drop the spool files and, once uploaded, the object (a failure to delete it is
        logged: the orphan sweep removes it later)."""
        super().discard()
        self.store.sink_closed(self.path)
        if self.uploading:
            try:
                self.store.client.delete_object(
                    Bucket=self.store.bucket, Key=self.store.key(self.query_id)
                )
            except Exception as e:  # boto's errors: S3 unreachable or refusing
                self.store.log.warning("result of %s not deleted: %s", self.query_id, e)


class S3ResultStore(ResultStore):
    """Results as objects in one S3 bucket, under a prefix."""

    bucket = Unicode(
        help="""The S3 bucket for query results (required). Only fort-query's role should be
        able to read it: results are data.

            c.S3ResultStore.bucket = "fort-query-results"
        """,
    ).tag(config=True)

    prefix = Unicode(
        "results/",
        help="""Key prefix of the result objects. Use one prefix (or bucket) per deployment:
        fort-query removes objects under it that its own store does not know (orphans).

            c.S3ResultStore.prefix = "prod/results/"
        """,
    ).tag(config=True)

    region = Unicode(
        "",
        help="""AWS region of the bucket; empty uses the AWS SDK's default.

            c.S3ResultStore.region = "us-east-1"
        """,
    ).tag(config=True)

    endpoint_url = Unicode(
        "",
        help="""An S3-compatible endpoint instead of AWS (e.g. MinIO); empty for AWS.

            c.S3ResultStore.endpoint_url = "http://minio.fort.svc:9000"
        """,
    ).tag(config=True)

    spool_dir = Unicode(
        help="""Local directory where results are written while their query runs, before the
        upload (mode 0700). Defaults to a `fort-query-spool` directory under the system's
        temporary directory.

            c.S3ResultStore.spool_dir = "/var/tmp/fort-query-spool"
        """,
    ).tag(config=True)

    spool_max_age = Float(
        24 * 3600,
        help="""Seconds after which a spool file no sink of this process writes is taken for
        one a crash left behind, and removed by the orphan sweep at start. Keep it longer than
        `QueryService.query_timeout` plus an upload: replicas on one machine may share the
        spool directory, and a running query's spool file is not touched while the engine
        computes.

            c.S3ResultStore.spool_max_age = 6 * 3600
        """,
    ).tag(config=True)

    @default("spool_dir")
    def _default_spool_dir(self):
        return os.path.join(tempfile.gettempdir(), "fort-query-spool")

    @validate("spool_max_age")
    def _positive_age(self, proposal):
        if proposal["value"] <= 0:
            raise ValueError("S3ResultStore.spool_max_age must be positive")
        return proposal["value"]

    @validate("prefix")
    def _prefix(self, proposal):
        value = proposal["value"]
        if value.startswith("/"):
            raise ValueError(f"S3ResultStore.prefix {value!r} must not start with '/'")
        return value

    def __init__(self, directory: str = "", **kwargs):
        super().__init__(**kwargs)  # *directory* (QueryService.results_dir) is not used
        if not self.bucket:
            raise ValueError("S3ResultStore.bucket is not set: name the bucket for results")
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        os.chmod(self.spool_dir, 0o700)
        import boto3

        kwargs: dict[str, Any] = {}
        if self.region:
            kwargs["region_name"] = self.region
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        self.client = boto3.client("s3", **kwargs)
        self._open_sinks: set[str] = set()
        self._sinks_lock = threading.Lock()

    def sink_opened(self, path: str) -> None:
        with self._sinks_lock:
            self._open_sinks.add(path)

    def sink_closed(self, path: str) -> None:
        with self._sinks_lock:
            self._open_sinks.discard(path)

    def key(self, query_id: str) -> str:
        return f"{self.prefix}{query_id}{SUFFIX}"

    def sink(self, query_id: str, max_rows: int, max_bytes: int) -> S3Sink:
        return S3Sink(self, query_id, max_rows, max_bytes)

    def location(self, query_id: str) -> str:
        return f"s3://{self.bucket}/{self.key(query_id)}"

    def size(self, query_id: str) -> int:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(query_id))
        except self.client.exceptions.ClientError as e:
            raise self._missing(e, query_id) from None
        return int(head["ContentLength"])

    def open(self, query_id: str) -> BinaryIO:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(query_id))
        except self.client.exceptions.ClientError as e:
            raise self._missing(e, query_id) from None
        return obj["Body"]

    def remove(self, query_id: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(query_id))
        FileSink(os.path.join(self.spool_dir, query_id + SUFFIX), 0, 0).discard()

    def ids(self) -> set[str]:
        out = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        ):
            for obj in page.get("Contents", ()):
                name = obj["Key"][len(self.prefix) :]
                if name.endswith(SUFFIX) and "/" not in name:
                    out.add(name[: -len(SUFFIX)])
        return out

    def sweep_orphans(self, known) -> int:
        """The bucket's orphans (see :meth:`ResultStore.sweep_orphans`), then the stale spool
        files (:meth:`sweep_spool`); returns how many of both were removed."""
        return super().sweep_orphans(known) + self.sweep_spool()

    def sweep_spool(self, now: float | None = None) -> int:
        """Remove the spool files of no live sink here, untouched for `spool_max_age`."""
        cutoff = (time.time() if now is None else now) - self.spool_max_age
        removed = 0
        with self._sinks_lock:
            live = set(self._open_sinks)
        with os.scandir(self.spool_dir) as entries:
            for entry in entries:
                path = entry.path.removesuffix(".partial")
                if (
                    not path.endswith(SUFFIX)
                    or path in live
                    or not entry.is_file(follow_symlinks=False)
                ):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        os.remove(entry.path)
                        removed += 1
        if removed:
            self.log.warning("removed %d stale spool file(s) from %s", removed, self.spool_dir)
        return removed

    def _missing(self, error, query_id: str) -> Exception:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in MISSING:
            return FileNotFoundError(f"no stored result for query {query_id}")
        return error

    def close(self) -> None:
        self.client.close()
