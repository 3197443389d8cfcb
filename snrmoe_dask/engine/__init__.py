"""The thin dask layer: how rows are cut into blocks and segments, the task that reads and folds a
segment, the fixed-order reduction graph over shards, and where the graph runs (threads, processes
or a dask.distributed cluster). Imports the numpy core and file access, never the experiment.
"""
