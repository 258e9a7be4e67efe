# tests/async_clients/leak.rb: Ruby's pg gem (Debian ruby-pg: PG.connect is PQconnectStart + poll, nonblocking) leaking connections from several threads at once.
#
# Usage: ruby leak.rb THREADS EACH APP
# The protocol (what each worker does, the result line, exit status) is leak.py's.
require 'pg'

unless ARGV.size == 3 && ARGV[0] =~ /\A\d+\z/ && ARGV[1] =~ /\A\d+\z/
  warn 'usage: ruby leak.rb THREADS EACH APP'
  exit 2
end
threads, each, app = ARGV[0].to_i, ARGV[1].to_i, ARGV[2]

Worker = Struct.new(:index, :kept, :pids, :refusal, :error, :recheck)
workers = (1..threads).map { |i| Worker.new(i, [], {}, nil, nil, 0) }

def value(conn, sql, want, what)
  row = conn.exec(sql).values.first
  raise "#{what}: got #{row.inspect}, expected #{want}" unless row && row.last.to_i == want
  row
end

# Runs the block for every worker, each in a thread of its own; an exception is its error.
def in_threads(workers)
  workers.map do |w|
    Thread.new do
      yield w
    rescue StandardError => e
      w.error ||= "worker #{w.index}: #{e.class}: #{e.message.split.join(' ')}"
    end
  end.each(&:join)
end

in_threads(workers) do |w|
  (1..each).each do |j|
    id = w.index * 1000 + j
    begin
      conn = PG.connect(application_name: app)
    rescue PG::Error => e
      w.refusal = e.message.split.join(' ')
      break
    end
    pid, = value(conn, "SELECT pg_backend_pid(), #{id}", id, "connect #{id}")
    w.pids[pid] = true
    w.kept << [id, conn]
  end
end
in_threads(workers.reject(&:error)) do |w|
  w.kept.each do |id, conn|
    value(conn, "SELECT #{id} * 7", id * 7, "leaked connection #{id}")
    w.recheck += 1
  end
end

errors = workers.map(&:error).compact
errors.each { |e| warn "leak.rb: #{e}" }
refusals = workers.map(&:refusal).compact
puts "async-refused: #{refusals.first}" unless refusals.empty?
puts format('async-result ok=%d refused=%d recheck=%d pids=%d',
            workers.sum { |w| w.kept.size }, refusals.size, workers.sum(&:recheck),
            workers.map { |w| w.pids.keys }.flatten.uniq.size)
$stdout.flush
# The leaked connections (workers' kept) are still referenced here; Ruby finishes them at exit.
exit(errors.empty? ? 0 : 1)
