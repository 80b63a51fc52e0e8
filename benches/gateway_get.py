#!/usr/bin/env python3
"""GETs of a list of keys through two S3 endpoints, alternating, same client and
concurrency: objects/s, MB/s and per-request latency (p50, p99) for each, and the
ratios. Used by benches/gateway.sh.

    gateway_get.py --rounds 3 --threads 16 --keys-file keys.txt \
        --a NAME,ENDPOINT,ACCESS,SECRET,BUCKET --b NAME,ENDPOINT,ACCESS,SECRET,BUCKET
"""
import argparse
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config


def client(endpoint, access, secret, threads):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            max_pool_connections=threads,
            retries={"max_attempts": 1},
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def one_round(c, bucket, keys, threads):
    lat = []
    lock = threading.Lock()
    total = [0]

    def get(k):
        t0 = time.perf_counter()
        body = c.get_object(Bucket=bucket, Key=k)["Body"].read()
        dt = time.perf_counter() - t0
        with lock:
            lat.append(dt)
            total[0] += len(body)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(get, keys))
    wall = time.perf_counter() - t0
    return len(keys) / wall, total[0] / wall / 1e6, lat


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--keys-file", required=True)
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    keys = [k for k in open(a.keys_file).read().split("\n") if k]
    sides = []
    for spec in (a.a, a.b):
        name, ep, ak, sk, bucket = spec.split(",")
        sides.append((name, client(ep, ak, sk, a.threads), bucket))
    res = {s[0]: {"ops": [], "mbs": [], "lat": []} for s in sides}
    for r in range(a.rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for name, c, bucket in order:
            ops, mbs, lat = one_round(c, bucket, keys, a.threads)
            res[name]["ops"].append(ops)
            res[name]["mbs"].append(mbs)
            res[name]["lat"].extend(lat)
    (na, _, _), (nb, _, _) = sides
    for name in (na, nb):
        r = res[name]
        print(
            f"{a.label:<22} {name:<12} {statistics.median(r['ops']):9.1f} obj/s "
            f"{statistics.median(r['mbs']):8.1f} MB/s  p50 {pct(r['lat'], 0.5) * 1e3:7.2f} ms"
            f"  p99 {pct(r['lat'], 0.99) * 1e3:7.2f} ms"
        )
    ra, rb = res[na], res[nb]
    print(
        f"{a.label:<22} ratio {na}/{nb}: "
        f"{statistics.median(ra['ops']) / statistics.median(rb['ops']):.2f}x obj/s, "
        f"{statistics.median(ra['mbs']) / statistics.median(rb['mbs']):.2f}x MB/s, "
        f"p50 +{(pct(ra['lat'], 0.5) - pct(rb['lat'], 0.5)) * 1e3:.2f} ms, "
        f"p99 +{(pct(ra['lat'], 0.99) - pct(rb['lat'], 0.99)) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
