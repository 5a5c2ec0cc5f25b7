"""Selective search for a whole data set on a Dask cluster: `compute_dataset_proposals(...,
scheduler=...)` (cache.py) hands its missing images here.

dask.distributed is optional and imported only here, only when a scheduler is given. The data
set object is sent to the workers once (pickled: for VOCDetection the folder and the image ids),
and each worker reads its images itself, so the images must be at the same path on every
worker, and every worker must import the same tinyrcnn version. Tasks are chunks of images;
their results come back as they complete and the caller writes each one to its sidecar at once.
"""
import contextlib


class DaskNotInstalled(ImportError, ValueError):
    """dask.distributed is missing: an ImportError, and a ValueError so that the command line
    prints it as its one `error:` line."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise DaskNotInstalled("dask.distributed is not installed: pip install 'dask[distributed]'") from None
    return distributed


def compute_on_cluster(scheduler, fn, dataset, indices, args, chunks_of):
    """Run fn(dataset, *args, chunk) on the cluster for every chunk of `indices`.

    scheduler: an address ('tcp://host:8786') or a dask.distributed Client (left open; a client
    made here from an address is closed at the end). chunks_of(indices, workers=N) cuts the
    indices into chunks, N being the cluster's worker threads. Returns a generator of fn's
    results in completion order; closing it (or an error) cancels the tasks still pending.
    Raises DaskNotInstalled (an ImportError) at once where dask.distributed is not installed.
    """
    distributed = _distributed()
    return _results(distributed, scheduler, fn, dataset, indices, args, chunks_of)


def _results(distributed, scheduler, fn, dataset, indices, args, chunks_of):
    with contextlib.ExitStack() as stack:
        if isinstance(scheduler, distributed.Client):
            client = scheduler
        else:
            client = stack.enter_context(distributed.Client(scheduler, set_as_default=False))
        chunks = chunks_of(indices, workers=sum(client.nthreads().values()))
        [data] = client.scatter([dataset], hash=False)      # sent once, not with every task
        pending = {}
        try:
            for chunk in chunks:
                future = client.submit(fn, data, *args, chunk, pure=False)
                pending[future.key] = future
            for future in distributed.as_completed(list(pending.values()), loop=client.loop):
                result = future.result()             # a task's error is raised here, as itself
                del pending[future.key]              # its result is released on the cluster
                yield result
        finally:
            client.cancel(list(pending.values()) + [data])
