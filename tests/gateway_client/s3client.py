#!/usr/bin/env python3
"""boto3 as the application of `tests/gateway.rs`: what a client sees through the gateway.

Subcommands (endpoint, keys and bucket from the environment: GW_ENDPOINT, GW_KEY,
GW_SECRET, GW_BUCKET; GW_CA for an HTTPS endpoint's certificate; GW_STYLE and GW_PROXY
for virtual-host style):

  answers KEYS OUT   HEAD, GET, ranges and conditional GETs of every key in KEYS (a JSON
                     list), written to OUT as JSON: the test compares them across states.
  listings MODEL     every listing (v2 and v1; prefix, delimiter, start-after / marker;
                     max-keys 1..n+1 and 100, 999, 1000) paged to its end, against the
                     keys in MODEL (a JSON list): no duplicate, no gap, no extra.
  checksums          uploads with boto3's default checksums (CRC32, in an aws-chunked
                     trailer over HTTPS), a multipart upload, and declared checksums that
                     do not match (BadDigest, nothing stored).
  chaos MODEL SECS SEED    4 clients PUT (some multipart), GET, DELETE, copy and LIST
                     keys they own at random for SECS seconds or until the gateway dies;
                     MODEL (JSON: key -> list of acceptable states, a state being null
                     for absent or [size, md5, etag]) is updated as answers come: a
                     request without an answer leaves both outcomes acceptable.
  check MODEL        after a restart: every key reads back as one of its acceptable
                     states (which then becomes the only one), and every listing
                     (max-keys 7 and 1000, v2; prefix s/ and t/) equals the keys present.
  download KEY OUT PAUSE   an s3transfer multipart download of KEY into OUT that stops
                     after its first part until the file PAUSE.go exists (it writes PAUSE
                     when it stops), so the test can move the object meanwhile.

Exits non-zero with the first difference on stderr.
"""

import base64
import hashlib
import json
import os
import sys
import threading
import time
import zlib

import boto3
import botocore.config
from botocore.exceptions import ClientError


def client():
    """GW_STYLE=virtual asks BUCKET.host; GW_PROXY then sends every request to the
    gateway's address (no DNS name needed for the bucket's host)."""
    proxy = os.environ.get("GW_PROXY")
    cfg = botocore.config.Config(
        s3={"addressing_style": os.environ.get("GW_STYLE", "path")},
        retries={"max_attempts": 1},
        connect_timeout=10,
        read_timeout=120,
        proxies={"http": proxy} if proxy else None,
    )
    return boto3.client(
        "s3",
        endpoint_url=os.environ["GW_ENDPOINT"],
        aws_access_key_id=os.environ["GW_KEY"],
        aws_secret_access_key=os.environ["GW_SECRET"],
        region_name="us-east-1",
        verify=os.environ.get("GW_CA") or None,
        config=cfg,
    )


def fail(msg):
    sys.stderr.write(msg + "\n")
    sys.exit(1)


def status(e):
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def get(c, bucket, key, **kw):
    """A GET's status, ETag, Content-Range and body MD5 (errors as their status)."""
    try:
        r = c.get_object(Bucket=bucket, Key=key, **kw)
        body = r["Body"].read()
        return {
            "status": r["ResponseMetadata"]["HTTPStatusCode"],
            "etag": r.get("ETag"),
            "range": r.get("ContentRange"),
            "length": len(body),
            "md5": hashlib.md5(body).hexdigest(),
        }
    except ClientError as e:
        return {"status": status(e), "code": e.response.get("Error", {}).get("Code")}


def answers(keys_file, out):
    c = client()
    bucket = os.environ["GW_BUCKET"]
    seen = {}
    for key in json.load(open(keys_file)):
        h = c.head_object(Bucket=bucket, Key=key)
        size, etag, mod = h["ContentLength"], h["ETag"], h["LastModified"]
        a = {
            "head": {
                "etag": etag,
                "size": size,
                "modified": mod.isoformat(),
                "type": h.get("ContentType"),
                "meta": h.get("Metadata", {}),
            },
            "get": get(c, bucket, key),
        }
        for r in ["bytes=0-0", "bytes=1-3", "bytes=-2", "bytes=5-", "bytes=3-1",
                  f"bytes={size + 10}-", "bytes=a-b"]:
            a[r] = get(c, bucket, key, Range=r)
        day = 86400
        conds = {
            "if-match": {"IfMatch": etag},
            "if-match-other": {"IfMatch": '"0123"'},
            "if-none-match": {"IfNoneMatch": etag},
            "if-none-match-other": {"IfNoneMatch": '"0123"'},
            "if-modified-since": {"IfModifiedSince": mod},
            "if-modified-since-earlier": {"IfModifiedSince": mod.timestamp() - day},
            "if-unmodified-since": {"IfUnmodifiedSince": mod},
            "if-unmodified-since-earlier": {"IfUnmodifiedSince": mod.timestamp() - day},
            "if-match-with-range": {"IfMatch": etag, "Range": "bytes=0-1"},
            "if-none-match-and-modified": {"IfNoneMatch": '"0123"', "IfModifiedSince": mod},
        }
        for name, kw in conds.items():
            a[name] = get(c, bucket, key, **kw)
        seen[key] = a
    json.dump(seen, open(out, "w"), indent=1, sort_keys=True)


def expected(keys, prefix, delim, after):
    """What a whole listing shows: keys and common prefixes in order. A common prefix
    sorts where its name does: one at or before start-after is not shown (as radosgw
    answers, and as a marker that names a prefix must skip it)."""
    out = []
    for k in sorted(keys):
        if not k.startswith(prefix) or (after is not None and k <= after):
            continue
        rest = k[len(prefix):]
        if delim and delim in rest:
            p = prefix + rest[: rest.index(delim) + len(delim)]
            if after is not None and p <= after:
                continue
            if not out or out[-1] != ("p", p):
                out.append(("p", p))
        else:
            out.append(("k", k))
    return out


def listed_v2(c, bucket, prefix, delim, after, mk):
    got, token, pages = [], None, 0
    while True:
        kw = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": mk}
        if delim:
            kw["Delimiter"] = delim
        if after is not None:
            kw["StartAfter"] = after
        if token:
            kw["ContinuationToken"] = token
        r = c.list_objects_v2(**kw)
        page = [("k", o["Key"]) for o in r.get("Contents", [])]
        page += [("p", p["Prefix"]) for p in r.get("CommonPrefixes", [])]
        if len(page) > mk or r.get("KeyCount") != len(page):
            fail(f"v2 page of {len(page)} entries, KeyCount {r.get('KeyCount')}, max-keys {mk}")
        got += sorted(page, key=lambda e: e[1])
        pages += 1
        if not r.get("IsTruncated"):
            return got
        token = r.get("NextContinuationToken")
        if not token or pages > 10000:
            fail(f"v2 truncated without a continuation token (max-keys {mk})")


def listed_v1(c, bucket, prefix, delim, mk):
    got, marker = [], None
    while True:
        kw = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": mk}
        if delim:
            kw["Delimiter"] = delim
        if marker is not None:
            kw["Marker"] = marker
        r = c.list_objects(**kw)
        page = [("k", o["Key"]) for o in r.get("Contents", [])]
        page += [("p", p["Prefix"]) for p in r.get("CommonPrefixes", [])]
        page.sort(key=lambda e: e[1])
        if len(page) > mk:
            fail(f"v1 page of {len(page)} entries, max-keys {mk}")
        got += page
        if not r.get("IsTruncated"):
            return got
        marker = r.get("NextMarker") or (page[-1][1] if page else None)
        if marker is None:
            fail(f"v1 truncated without a marker (max-keys {mk})")


def listings(model_file):
    keys = json.load(open(model_file))
    c = client()
    bucket = os.environ["GW_BUCKET"]
    n = len(keys)
    sizes = list(range(1, n + 2)) + [100, 999, 1000]
    mid = sorted(keys)[n // 2] if keys else ""
    asks = [("", None, None), ("d/", None, None), ("", "/", None), ("d/", "/", None),
            ("", None, mid), ("", "/", mid)]
    runs = 0
    for prefix, delim, after in asks:
        want = expected(keys, prefix, delim, after)
        for mk in sizes:
            got = listed_v2(c, bucket, prefix, delim, after, mk)
            if got != want:
                fail(f"v2 prefix={prefix!r} delimiter={delim!r} start-after={after!r} "
                     f"max-keys={mk}:\n got  {got}\n want {want}")
            runs += 1
    for prefix, delim in [("", None), ("", "/"), ("d/", "/")]:
        want = expected(keys, prefix, delim, None)
        for mk in sizes:
            got = listed_v1(c, bucket, prefix, delim, mk)
            if got != want:
                fail(f"v1 prefix={prefix!r} delimiter={delim!r} max-keys={mk}:\n"
                     f" got  {got}\n want {want}")
            runs += 1
    print(f"{runs} listings of {n} keys paged to their end: as the model")


def b64(b):
    return base64.b64encode(b).decode()


def checksums():
    c = client()
    bucket = os.environ["GW_BUCKET"]
    body = os.urandom(2048)
    # boto3's defaults: a CRC32 of the body (a trailer over HTTPS), the gateway checks it.
    r = c.put_object(Bucket=bucket, Key="ck/default", Body=body)
    if r["ETag"].strip('"') != hashlib.md5(body).hexdigest():
        fail(f"ETag {r['ETag']} is not the MD5 of the body")
    crc = zlib.crc32(body).to_bytes(4, "big")
    if os.environ["GW_ENDPOINT"].startswith("https:") and r.get("ChecksumCRC32") != b64(crc):
        fail(f"the trailer's CRC32 was not verified: {r.get('ChecksumCRC32')} != {b64(crc)}")
    if c.get_object(Bucket=bucket, Key="ck/default")["Body"].read() != body:
        fail("ck/default read back differs")
    # Declared checksums that hold, and ones that do not.
    c.put_object(Bucket=bucket, Key="ck/crc32", Body=body, ChecksumCRC32=b64(crc))
    c.put_object(Bucket=bucket, Key="ck/sha256", Body=body,
                 ChecksumSHA256=b64(hashlib.sha256(body).digest()))
    for name, kw in [
        ("crc32", {"ChecksumCRC32": b64(b"\0\0\0\0")}),
        ("sha256", {"ChecksumSHA256": b64(hashlib.sha256(b"other").digest())}),
        ("md5", {"ContentMD5": b64(hashlib.md5(b"other").digest())}),
    ]:
        try:
            c.put_object(Bucket=bucket, Key=f"ck/bad-{name}", Body=body, **kw)
            fail(f"a wrong {name} was accepted")
        except ClientError as e:
            if e.response["Error"]["Code"] != "BadDigest":
                fail(f"a wrong {name}: {e.response['Error']}")
        try:
            c.head_object(Bucket=bucket, Key=f"ck/bad-{name}")
            fail(f"ck/bad-{name} was stored")
        except ClientError as e:
            if status(e) != 404:
                fail(f"ck/bad-{name}: {e}")
    # A multipart upload with the defaults (s3transfer, 5 MiB parts, CRC32 per part).
    from boto3.s3.transfer import TransferConfig
    big = os.urandom(10 << 20)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ck-big-{os.getpid()}")
    open(path, "wb").write(big)
    tc = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    c.upload_file(path, bucket, "ck/big", Config=tc)
    os.remove(path)
    h = c.head_object(Bucket=bucket, Key="ck/big")
    if not h["ETag"].strip('"').endswith("-2") or h["ContentLength"] != len(big):
        fail(f"ck/big: {h['ETag']} {h['ContentLength']}")
    if hashlib.md5(c.get_object(Bucket=bucket, Key="ck/big")["Body"].read()).digest() != \
            hashlib.md5(big).digest():
        fail("ck/big read back differs")
    print("default and declared checksums verified; wrong ones refused with BadDigest")


def download(key, out, pause):
    """s3transfer pins the object with If-Match on the ETag of its first answer: a move
    in the middle must not change that ETag (412 otherwise)."""
    from boto3.s3.transfer import TransferConfig
    c = client()
    bucket = os.environ["GW_BUCKET"]
    state = {"bytes": 0, "paused": False}
    lock = threading.Lock()

    def progress(n):
        with lock:
            state["bytes"] += n
            stop = not state["paused"] and state["bytes"] >= (1 << 20)
            if stop:
                state["paused"] = True
        if stop:
            open(pause, "w").close()
            deadline = time.time() + 600
            while not os.path.exists(pause + ".go"):
                if time.time() > deadline:
                    fail("never told to go on")
                time.sleep(0.1)

    tc = TransferConfig(multipart_threshold=1 << 20, multipart_chunksize=1 << 20,
                        max_concurrency=1, use_threads=True)
    c.download_file(bucket, key, out, Config=tc, Callback=progress)
    if not state["paused"]:
        fail("the download never paused")
    print(f"downloaded {state['bytes']} bytes across the move")


def state_of(c, bucket, key):
    """What the gateway serves at key: None, or [size, md5, etag]."""
    try:
        r = c.get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if status(e) == 404:
            return None
        raise
    body = r["Body"].read()
    if len(body) != r["ContentLength"]:
        fail(f"{key}: {len(body)} bytes of the {r['ContentLength']} announced")
    return [len(body), hashlib.md5(body).hexdigest(), r["ETag"]]


def check(model_file):
    model = json.load(open(model_file))
    c = client()
    bucket = os.environ["GW_BUCKET"]
    for key, ok in sorted(model.items()):
        got = state_of(c, bucket, key)
        if got not in ok:
            fail(f"{key}: served {got}, acceptable {ok}")
        model[key] = [got]
    present = sorted(k for k, v in model.items() if v[0] is not None)
    for mk in (7, 1000):
        for prefix in ("", "s/", "t"):
            got = [k for _, k in listed_v2(c, bucket, prefix, None, None, mk)]
            want = [k for k in present if k.startswith(prefix)]
            if got != want:
                fail(f"listing prefix={prefix!r} max-keys={mk}:\n got  {got}\n want {want}")
    json.dump(model, open(model_file, "w"))
    print(f"{len(model)} keys as acknowledged ({len(present)} present), listings whole")


class Died(Exception):
    pass


def chaos(model_file, secs, seed):
    import random
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError
    model = json.load(open(model_file))
    bucket = os.environ["GW_BUCKET"]
    lock = threading.Lock()
    end = time.time() + float(secs)
    # Each key has one owner: the source's keys dealt out, and t<n>/ for client n.
    keys = sorted(k for k in model if k.startswith("s/"))
    counts = {}
    trace = open(os.environ["GW_TRACE"], "a") if os.environ.get("GW_TRACE") else None

    def worker(n):
        rnd = random.Random(int(seed) * 100 + n)
        c = client()
        mine = [k for i, k in enumerate(keys) if i % 4 == n] + [f"t{n}/{j}" for j in range(12)]
        for k in mine:
            with lock:
                model.setdefault(k, [None])
        try:
            run(n, rnd, c, mine)
        except SystemExit:
            errors.append(n)

    errors = []

    def run(n, rnd, c, mine):
        while time.time() < end:
            key = rnd.choice(mine)
            with lock:
                before = list(model[key])
            op = rnd.choice(["put", "put", "get", "delete", "copy", "list", "multipart"])
            try:
                after = step(c, rnd, op, key, before, mine)
            except Exception as e:  # noqa: BLE001 - any failure leaves the key undecided
                # No answer (or a 503): either outcome may stand.
                with lock:
                    model[key] = before + [s for s in pending.get(n, []) if s not in before]
                    if trace:
                        trace.write(f"{time.time():.3f} {n} {op} {key} !! {e} -> {model[key]}\n")
                if isinstance(e, ClientError) and status(e) not in (500, 502, 503):
                    fail(f"{op} {key}: {e}")
                if not isinstance(e, (ClientError, BotoCoreError)):
                    sys.stderr.write(f"client {n}: {op} {key}: {type(e).__name__}: {e}\n")
                return
            finally:
                pending.pop(n, None)
            with lock:
                model[key] = after
                counts[op] = counts.get(op, 0) + 1
                if trace:
                    trace.write(f"{time.time():.3f} {n} {op} {key} -> {after}\n")
                    trace.flush()

    pending = {}

    def step(c, rnd, op, key, before, mine):
        n = int(threading.current_thread().name)
        if op in ("put", "multipart"):
            size = rnd.choice([0, 1, 2048, 40000]) if op == "put" else (5 << 20) + 7
            body = rnd.randbytes(size)
            md5 = hashlib.md5(body).hexdigest()
            if op == "put":
                pending[n] = [[size, md5, f'"{md5}"']]
                r = c.put_object(Bucket=bucket, Key=key, Body=body)
                return [[size, md5, r["ETag"]]]
            parts = [body[: 5 << 20], body[5 << 20:]]
            etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
            pending[n] = [[size, md5, f'"{etag}-2"']]
            up = c.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            done = []
            for i, p in enumerate(parts, 1):
                e = c.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=i, Body=p)
                done.append({"PartNumber": i, "ETag": e["ETag"]})
            r = c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up,
                                            MultipartUpload={"Parts": done})
            return [[size, md5, r["ETag"]]]
        if op == "delete":
            pending[n] = [None]
            c.delete_object(Bucket=bucket, Key=key)
            return [None]
        if op == "copy":
            src = rnd.choice(mine)
            with lock:
                s = model[src]
            if len(s) != 1 or s[0] is None or src == key:
                return before
            size, md5, _ = s[0]
            pending[n] = [[size, md5, f'"{md5}"']]
            r = c.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": src})
            return [[size, md5, r["CopyObjectResult"]["ETag"]]]
        if op == "get":
            got = state_of(c, bucket, key)
            if got not in before:
                fail(f"{key}: read {got}, acceptable {before}")
            return [got]
        listed_v2(c, bucket, "", None, None, rnd.choice([3, 50, 1000]))
        return before

    threads = [threading.Thread(target=worker, args=(n,), name=str(n)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump(model, open(model_file, "w"))
    print(f"chaos: {counts}")
    if errors:
        sys.exit(1)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"answers": answers, "listings": listings, "checksums": checksums,
     "download": download, "chaos": chaos, "check": check}[cmd](*args)


if __name__ == "__main__":
    main()
