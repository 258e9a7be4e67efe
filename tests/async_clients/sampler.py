"""tests/async_clients/sampler.py: counts an application's backends in pg_stat_activity every 2ms and keeps the highest count in a file, until killed.

Usage: sampler.py APP PEAKFILE   (plain libpq, as the PG* environment's user: a superuser,
who always finds a reserved slot). APP is the application_name counted. PEAKFILE
holds the highest count seen; it is written after the first sample and whenever the count
rises (replaced whole, so it can be read at any time). It also ends when the script that
started it is gone.
"""
import os
import sys
import time

import psycopg2

app, peak_file = sys.argv[1], sys.argv[2]
conn = psycopg2.connect("application_name=pqd_sampler")
conn.autocommit = True
cur = conn.cursor()
peak = -1
parent = os.getppid()
while os.getppid() == parent:
    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,))
    n = cur.fetchone()[0]
    if n > peak:
        peak = n
        with open(peak_file + ".tmp", "w") as f:
            f.write("%d\n" % peak)
        os.replace(peak_file + ".tmp", peak_file)
    time.sleep(0.002)
