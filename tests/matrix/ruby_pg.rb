# tests/matrix/ruby_pg.rb: Ruby's pg gem (Debian ruby-pg: PG.connect is PQconnectStart + poll, nonblocking, notice hooks), churned or leaked; one matrix client.
#
# Usage: ruby ruby_pg.rb churn|leak N APP
# The protocol (result line, refusals, exit status) is described in matrix_common.py. A leak
# keeps each PG::Connection in an array and never closes it. Every connection is first set up
# as Rails' ActiveRecord PostgreSQL adapter sets one up (its SETs, one command each), and each
# one still shows those settings when it answers again.
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
# What ActiveRecord 7's configure_connection sends, and what the session then shows.
RAILS_SETS = ["SET client_min_messages TO 'warning'", 'SET standard_conforming_strings = on',
              'SET intervalstyle = iso_8601', "SET SESSION timezone TO 'UTC'"].freeze
RAILS_SHOWS = %w[warning on iso_8601 UTC].freeze
RAILS_SHOW_SQL = "SELECT current_setting('client_min_messages'), current_setting('standard_conforming_strings'), " \
                 "current_setting('IntervalStyle'), current_setting('TimeZone')"
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
  RAILS_SETS.each { |sql| conn.exec(sql) }
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
  shows = query(conn, RAILS_SHOW_SQL)
  if shows != RAILS_SHOWS
    warn "matrix: leaked handle #{i}: its settings are #{shows.inspect}, expected #{RAILS_SHOWS.inspect}"
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
