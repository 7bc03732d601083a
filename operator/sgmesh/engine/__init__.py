"""The decisions: topology, ownership, planning, reachability and cluster members.

Pure: data in, data out; no I/O library, no clock.
"""
