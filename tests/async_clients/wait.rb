# tests/async_clients/wait.rb: Ruby's pg polls a connect that has to wait for a server connection: its socket_io must be a socket.
#
# Usage: ruby wait.rb APP
# A holds a connection in a transaction; B connects with connect_start and Ruby's own
# socket_io (BasicSocket.for_fd on PQsocket, which refuses anything but a socket) while A still
# holds it; A commits; B's connect is polled to the end, waiting on socket_io each step, and B
# runs a query. Prints "async-result waited=W same_backend=S stable_socket=T ok=1", where W is 1
# when B's descriptor was not readable before A committed, S 1 when B runs on A's backend, T 1
# when B's socket number after connecting is the one it had before A committed.
require 'pg'

unless ARGV.size == 1
  warn 'usage: ruby wait.rb APP'
  exit 2
end
app = ARGV[0]

# Polls conn's connect (from `status`) to its end, waiting on socket_io at each step.
def poll_connect(conn, status)
  until status == PG::PGRES_POLLING_OK
    raise "connect failed: #{conn.error_message}" if status == PG::PGRES_POLLING_FAILED

    io = conn.socket_io
    ready = status == PG::PGRES_POLLING_READING ? io.wait_readable(10) : io.wait_writable(10)
    raise "connect: no readiness within 10 s (status #{status})" unless ready

    status = conn.connect_poll
  end
end

# Both connect the same way (PG.connect adds what it resolved itself: another key).
a = PG::Connection.connect_start(application_name: app)
poll_connect(a, PG::PGRES_POLLING_WRITING)
a.exec('BEGIN')
pid_a = a.exec('SELECT pg_backend_pid()').getvalue(0, 0).to_i
b = PG::Connection.connect_start(application_name: app)
raise "connect_start: #{b.error_message}" if b.status == PG::CONNECTION_BAD

status = b.connect_poll
fd_waiting = b.socket_io.fileno # raised Errno::EBADF when PQsocket was not a socket
waited = IO.select([b.socket_io], nil, nil, 0.2).nil? ? 1 : 0
a.exec('COMMIT')
poll_connect(b, status)
pid_b = b.exec('SELECT pg_backend_pid()').getvalue(0, 0).to_i
stable = b.socket_io.fileno == fd_waiting ? 1 : 0
puts format('async-result waited=%d same_backend=%d stable_socket=%d ok=1',
            waited, pid_a == pid_b ? 1 : 0, stable)
b.finish
a.finish
