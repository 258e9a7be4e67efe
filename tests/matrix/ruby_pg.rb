# tests/matrix/ruby_pg.rb: Ruby's pg gem (Debian ruby-pg: PG.connect is PQconnectStart + poll, nonblocking, notice hooks), churned or leaked; one matrix client.
#
# Usage: ruby ruby_pg.rb churn|leak N APP
# The protocol (result line, refusals, exit status) is described in matrix_common.py. A leak
# keeps each PG::Connection in an array and never closes it.
require 'pg'

mode, n, app = ARGV
unless ARGV.size == 3 && %w[churn leak].include?(mode) && n =~ /\A\d+\z/
  warn "usage: ruby_pg.rb churn|leak N APP"
  exit 2
end
n = n.to_i

def query(conn, sql)
  row = conn.exec(sql).values.first
  unless row
    warn "matrix: #{sql}: no row"
    exit 1
  end
  row
end

obs = PG.connect(application_name: "#{app}_obs")
max_conn = query(obs, 'SHOW max_connections')[0].to_i
pids = {}
kept = []
ok = 0
refused_at = 0
(1..n).each do |i|
  begin
    conn = PG.connect(application_name: app)
  rescue PG::Error => e
    refused_at = i
    puts "matrix-refused: #{e.message.split.join(' ')}"
    break
  end
  pid, echo = query(conn, "SELECT pg_backend_pid(), #{i}")
  if echo.to_i != i
    warn "matrix: cycle #{i}: SELECT returned #{echo}"
    exit 1
  end
  pids[pid] = true
  ok += 1
  if mode == 'churn'
    conn.close
  else
    kept << [i, conn]
  end
end
recheck = 0
kept.each do |i, conn|
  v = query(conn, "SELECT #{i} * 7")[0].to_i
  if v != i * 7
    warn "matrix: leaked handle #{i}: SELECT returned #{v}"
    exit 1
  end
  recheck += 1
end
backends = query(obs, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '#{app}'")[0].to_i
puts format('matrix-result mode=%s n=%d ok=%d pids=%d backends=%d max_conn=%d refused_at=%d recheck=%d',
            mode, n, ok, pids.size, backends, max_conn, refused_at, recheck)
$stdout.flush
# The leaked connections (kept) are still referenced here; Ruby finishes them at exit.
exit 0
