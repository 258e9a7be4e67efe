"""load.py: sends N POST /items/{rid} requests from C concurrent clients to the seed app and
prints one JSON line: requests, ok, failed, seconds, requests_per_second, the first error, and
the rids of the requests that succeeded.

Usage: load.py URL N C PREFIX
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse


def main():
    url, total, clients, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    parts = urllib.parse.urlsplit(url)
    lock = threading.Lock()
    next_index = [0]
    ok, failed, errors = [], [], []

    def client():
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        while True:
            with lock:
                i = next_index[0]
                if i >= total:
                    break
                next_index[0] += 1
            rid = f"{prefix}-{i}"
            try:
                conn.request("POST", f"/items/{rid}")
                response = conn.getresponse()
                body = response.read()
                if response.status == 200 and json.loads(body).get("count") == 1:
                    with lock:
                        ok.append(rid)
                else:
                    with lock:
                        failed.append(rid)
                        errors.append(f"HTTP {response.status}: {body[:300]!r}")
            except Exception as e:  # a dropped connection counts as a failed request
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
                with lock:
                    failed.append(rid)
                    errors.append(repr(e))
        conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    print(json.dumps({
        "requests": total, "ok": len(ok), "failed": len(failed), "seconds": round(seconds, 3),
        "requests_per_second": round(total / seconds, 1), "first_error": errors[0] if errors else "",
        "ok_rids": ok,
    }))


if __name__ == "__main__":
    main()
