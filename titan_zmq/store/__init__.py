"""The titan store: a KV/set/TTL engine behind a REP socket, journaled to an append-only file.

Modules: ``engine`` (the data and its ordered key index), ``aof`` (the append-only file),
``service`` (requests in, replies out, no sockets), ``server`` (the REP loop), ``client`` (the
blocking client other processes use; the only module meant to be imported outside the store).
Nothing is imported here, so importing the client does not load the store itself.
"""
