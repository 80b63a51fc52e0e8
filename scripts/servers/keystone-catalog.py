#!/usr/bin/python3
"""Registers Swift's object-store service and its public and internal endpoints in a
Keystone database, in-process through Keystone's own catalog API (the same calls
`keystone-manage bootstrap` makes for the identity service), before Keystone serves
requests. Idempotent: an existing object-store service and endpoints are kept, a changed
URL is updated.

    keystone-catalog.py KEYSTONE_CONF URL REGION

Why not the REST API: keystone's single-threaded test server can sit idle holding a
SQLite read lock after it has issued a token, and a write through the API that meets it
fails with "database is locked" after SQLite's 5 s busy timeout, on every retry while the
lock is held (scripts/servers/README.md). Written while no server runs, nothing holds it.
"""
import sys
import uuid

import keystone.conf
from keystone.common import driver_hints
from keystone.common import provider_api
from keystone.common import sql
from keystone.server import backends


def main(conf_file, url, region):
    conf = keystone.conf.CONF
    keystone.conf.configure()
    sql.initialize()
    conf(args=["--config-file", conf_file], project="keystone")
    backends.load_backends()
    catalog = provider_api.ProviderAPIs.catalog_api

    hints = driver_hints.Hints()
    hints.add_filter("type", "object-store")
    services = catalog.list_services(hints)
    if services:
        service_id = services[0]["id"]
    else:
        service_id = uuid.uuid4().hex
        catalog.create_service(service_id, {"id": service_id, "type": "object-store",
                                            "name": "swift", "enabled": True})
    hints = driver_hints.Hints()
    hints.add_filter("service_id", service_id)
    have = {e["interface"]: e for e in catalog.list_endpoints(hints)}
    for interface in ("public", "internal"):
        ref = have.get(interface)
        if ref is None:
            eid = uuid.uuid4().hex
            catalog.create_endpoint(eid, {"id": eid, "interface": interface, "url": url,
                                          "service_id": service_id, "region_id": region,
                                          "enabled": True})
        elif ref["url"] != url:
            catalog.update_endpoint(ref["id"], {"url": url})
    print(service_id)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: keystone-catalog.py KEYSTONE_CONF URL REGION")
    main(*sys.argv[1:])
