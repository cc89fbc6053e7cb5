"""Runs moto_server with DynamoDB Query reading only the queried partition.

moto (5.2.x) answers a Query on a table's primary key by sorting every item of the table and
keeping those of the queried partition (Table.query -> Table.all_items). DynamoDB reads the
partition alone, so against moto each per-drive Query of a large inventory costs the whole
table: the 120,000-item pipeline benchmark spent hours in that sort. Here all_items, while a
primary-key Query runs on this thread, returns the queried partition in the order moto's own
would (range key ascending); results, paging and filters are moto's, unchanged.
Arguments are moto_server's.
"""

import inspect
import sys
import threading

from moto.dynamodb.models.table import Table
from moto.server import main

_local = threading.local()
_all_items = Table.all_items
_query = Table.query
_query_signature = inspect.signature(_query)
if "index_name" not in _query_signature.parameters or "hash_key" not in _query_signature.parameters:
    sys.exit(f"moto's Table.query{_query_signature} is not the one this patch knows; fix: pin moto as infra/local/requirements.txt does")


def all_items(self):
    partition = getattr(_local, "partition", None)
    if partition is None:
        return _all_items(self)
    found = self.items.get(partition)
    if found is None:
        return []
    if not self.range_key_attr:
        return [found]
    return sorted(found.values(), key=lambda item: item.range_key)


def query(self, *args, **kwargs):
    bound = _query_signature.bind(self, *args, **kwargs).arguments
    hash_key = bound.get("hash_key")
    if bound.get("index_name") or hash_key is None:
        return _query(self, *args, **kwargs)
    _local.partition = hash_key
    try:
        return _query(self, *args, **kwargs)
    finally:
        _local.partition = None


Table.all_items = all_items
Table.query = query

if __name__ == "__main__":
    sys.argv[0] = "moto_server"
    sys.exit(main())
