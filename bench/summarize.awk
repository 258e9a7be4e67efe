# Turns bench/run.sh's raw CSV into a text table, a Markdown table or gnuplot data (mawk-compatible).
#
# Usage: awk -F, -v out=text|md|dat [-v dirty_label=...] -f summarize.awk raw.csv
# Input columns: round,script,clients,transport,config,tps,latency_ms,transactions,failed,backends_opened,
#                pqd_connects,pqd_opened,pqd_reused,status,note
# Rows whose status is not "ok" count as missing; a cell with no good row prints "n/a".

BEGIN {
	ncfg = split("persistent pqdedup-persistent persistent-reset direct pqdedup pqdedup-noreset pgb-session pgb-tx pqdedup-dirty", CFG, " ")
	LABEL["persistent"] = "persistent (no -C)"
	LABEL["pqdedup-persistent"] = "persistent under pqdedup (per-call cost)"
	LABEL["persistent-reset"] = "persistent + DISCARD ALL per txn"
	LABEL["direct"] = "-C direct"
	LABEL["pqdedup"] = "-C pqdedup (defaults)"
	LABEL["pqdedup-noreset"] = "-C pqdedup, reset off"
	LABEL["pgb-session"] = "-C PgBouncer session"
	LABEL["pgb-tx"] = "-C PgBouncer transaction"
	LABEL["pqdedup-dirty"] = (dirty_label != "") ? dirty_label : "-C pqdedup RESET=dirty"
	ncell = 0
	for (s = 1; s <= 2; s++)
		for (c = 1; c <= 2; c++)
			for (t = 1; t <= 2; t++) {
				ncell++
				CS[ncell] = (s == 1) ? "select" : "tpcb"
				CC[ncell] = (c == 1) ? 1 : 8
				CT[ncell] = (t == 1) ? "unix" : "tcp"
			}
}

NR == 1 { next }

{
	key = $2 SUBSEP $3 SUBSEP $4 SUBSEP $5
	seen[key] = 1
	if ($14 != "ok" || $6 == "")
		{ bad[key]++; next }
	n[key]++
	tps[key, n[key]] = $6 + 0
	lat[key, n[key]] = $7 + 0
	txn[key, n[key]] = $8 + 0
	bo[key, n[key]] = $10
	pco[key, n[key]] = $11
	pop[key, n[key]] = $12
	fail[key] += $9
}

# Sorts v[1..k] in place (insertion sort; k is a handful of rounds).
function sortv(v, k,    i, j, x) {
	for (i = 2; i <= k; i++) {
		x = v[i]
		for (j = i - 1; j >= 1 && v[j] > x; j--)
			v[j + 1] = v[j]
		v[j + 1] = x
	}
}

# Fills MED, MIN, MAX for column arr of key; returns 0 when there is no good row.
function stats(arr, key,    i, k, v) {
	k = n[key]
	if (k == 0)
		return 0
	for (i = 1; i <= k; i++)
		v[i] = (arr == "tps") ? tps[key, i] : (arr == "lat") ? lat[key, i] : \
		       (arr == "txn") ? txn[key, i] : (arr == "pco") ? pco[key, i] + 0 : \
		       (arr == "pop") ? pop[key, i] + 0 : bo[key, i]
	sortv(v, k)
	MIN = v[1]; MAX = v[k]
	MED = (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
	return 1
}

function ratio(a, b) {
	return (b > 0 && a != "") ? sprintf("%.3f", a / b) : "n/a"
}

END {
	if (out == "text")
		printf "%-6s %2s %-4s %-33s %9s %19s %8s %17s %7s %7s %s\n", "script", "c", "via",
		       "configuration", "tps", "tps min-max", "lat ms", "lat min-max", "x pers", "x pgbtx",
		       "backends/txns"
	if (out == "md") {
		print "| script | clients | transport | configuration | TPS (median) | TPS min-max | latency ms (median) | latency min-max | x persistent | x PgBouncer tx | backends opened / transactions (median) | pqdedup opened / connects | runs |"
		print "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	}
	if (out == "dat") {
		printf "cell"
		for (j = 2; j <= ncfg; j++)
			printf "\t\"%s\"", LABEL[CFG[j]]
		printf "\n"
	}
	for (i = 1; i <= ncell; i++) {
		base = CS[i] SUBSEP CC[i] SUBSEP CT[i]
		pers = ""; pgbtx = ""
		if (stats("tps", base SUBSEP "persistent")) pers = MED
		if (stats("tps", base SUBSEP "pgb-tx")) pgbtx = MED
		if (out == "dat")
			printf "\"%s %dc %s\"", (CS[i] == "select" ? "-S" : "tpcb"), CC[i], CT[i]
		for (j = 1; j <= ncfg; j++) {
			key = base SUBSEP CFG[j]
			if (!seen[key])
				continue
			have = stats("tps", key)
			if (out == "dat") {
				if (j > 1)
					printf "\t%s", ((have && pers > 0) ? sprintf("%.4f", MED / pers) : "NaN")
				continue
			}
			if (!have) {
				if (out == "text")
					printf "%-6s %2d %-4s %-33s %9s   (%d failed or skipped runs)\n", CS[i], CC[i], CT[i], \
					       LABEL[CFG[j]], "n/a", bad[key]
				else
					printf "| %s | %d | %s | %s | n/a | | | | | | | | 0/%d |\n", CS[i], CC[i], CT[i], \
					       LABEL[CFG[j]], bad[key]
				continue
			}
			tmed = MED; trange = sprintf("%.0f-%.0f", MIN, MAX)
			stats("lat", key); lmed = MED; lrange = sprintf("%.3f-%.3f", MIN, MAX)
			stats("bo", key); bmed = MED
			stats("txn", key); xmed = MED
			pq = ""
			if (CFG[j] ~ /^pqdedup/ && pco[key, 1] != "") {
				stats("pop", key); pq = MED " / "
				stats("pco", key); pq = pq MED
			}
			rp = ratio(tmed, pers); rt = ratio(tmed, pgbtx)
			runs = n[key] "/" (n[key] + bad[key])
			if (out == "text")
				printf "%-6s %2d %-4s %-33s %9.0f %19s %8.3f %17s %7s %7s %s/%s%s\n", CS[i], CC[i], CT[i], \
				       LABEL[CFG[j]], tmed, trange, lmed, lrange, rp, rt, bmed, xmed, \
				       (fail[key] > 0 ? " FAILED-TXNS=" fail[key] : "")
			else
				printf "| %s | %d | %s | %s | %.0f | %s | %.3f | %s | %s | %s | %s / %s | %s | %s |\n", \
				       (CS[i] == "select" ? "-S" : "TPC-B"), CC[i], CT[i], LABEL[CFG[j]], tmed, trange, \
				       lmed, lrange, rp, rt, bmed, xmed, pq, runs
		}
		if (out == "dat")
			printf "\n"
	}
}
