#!/usr/bin/env bash
# tests/async_clients/wait.sh: Ruby's pg connects while the only server connection is held: the connect waits, on a socket, then runs on that connection; plain and under the launcher.
#
# wait.rb does the work. Plain: both connects work on backends of their own. Under the launcher
# with PQDEDUP_MAX_PER_KEY=1: B's connect waits (its descriptor not readable while A's
# transaction is open), Ruby's socket_io works on it (BasicSocket.for_fd wants a socket), and
# once A commits B connects on A's backend, with the socket number it had while waiting. Both
# runs: exit 0, nothing on stderr, no backend left.
. "$(dirname "$0")/lib.sh"

APP=pqdt_async_wait_$$
run_client plain /usr/bin/ruby "$HERE/wait.rb" "$APP"
check "plain: clean exit (status $RC, stderr empty)" clean_exit plain
check "plain: B connected and answered ($(result plain ok))" is "$(result plain ok)" -eq 1
check "plain: B had a backend of its own (same_backend=$(result plain same_backend))" \
  is "$(result plain same_backend)" -eq 0
check "plain: no backend left after exit" wait_backends "$APP" 0

run_client pqdedup env PQDEDUP_MAX_PER_KEY=1 /usr/bin/ruby "$HERE/wait.rb" "$APP"
check "pqdedup: clean exit (status $RC, stderr empty)" clean_exit pqdedup
check "pqdedup: no error logged" no_error_logged
check "pqdedup: B connected and answered ($(result pqdedup ok))" is "$(result pqdedup ok)" -eq 1
check "pqdedup: B's connect waited while A held the connection (waited=$(result pqdedup waited))" \
  is "$(result pqdedup waited)" -eq 1
check "pqdedup: B runs on A's backend once A committed (same_backend=$(result pqdedup same_backend))" \
  is "$(result pqdedup same_backend)" -eq 1
check "pqdedup: B's socket number is the one it waited on (stable_socket=$(result pqdedup stable_socket))" \
  is "$(result pqdedup stable_socket)" -eq 1
check "pqdedup: the connect was counted as a wait (stats: waits=$(stat_sum waits))" is "$(stat_sum waits)" -ge 1
check "pqdedup: no backend left after exit" wait_backends "$APP" 0
finish
