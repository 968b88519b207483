"""The local file system layer: confinement under a root and streaming writes.

:mod:`sarra.localfs.confined` keeps every operation under one destination root (``openat``
walks, in-flight files renamed into place); :mod:`sarra.localfs.streaming` moves large bodies
into files with page-aligned buffers, overlapped hashing and direct I/O.

Nothing here knows about notices, brokers or transports: the flow and the multi-part
reassembly (:mod:`sarra.parts`) both build on it.
"""
