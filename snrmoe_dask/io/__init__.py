"""File access: the shard format and its readers and writers, the statistics cache, the simulator.

``shards`` is the only module that knows the HDF5 layout of a shard (it opens them lazily and
reads row blocks, through ``direct_io``'s O_DIRECT path where the layout allows); ``digest`` hashes
the blocks a pass reads; ``cache`` stores finished pass results (per shard and per shard list);
``simulate`` writes synthetic shards in the real layout.
Imports only the numpy core below it.
"""
