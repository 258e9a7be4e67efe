<?php
// tests/matrix/php_connect_async.php: pg_connect with PGSQL_CONNECT_ASYNC (PQconnectStart), polled with pg_connect_poll and stream_select on pg_socket; shared by php_pgsql.php and tests/async_clients/leak.php.

// The connection once pg_connect_poll reports it ready, or null with the reason in the
// caller's global $last_error (the poll failed, or 20 s passed).
function connect_async($cs) {
    global $last_error;
    $c = pg_connect($cs, PGSQL_CONNECT_ASYNC | PGSQL_CONNECT_FORCE_NEW);
    if ($c === false)
        return null;
    $deadline = microtime(true) + 20;
    for (;;) {
        $st = pg_connect_poll($c);
        if ($st === PGSQL_POLLING_OK)
            return $c;
        if ($st === PGSQL_POLLING_FAILED || microtime(true) > $deadline) {
            $last_error = pg_last_error($c);
            return null;
        }
        $r = $w = $e = [];
        if ($st === PGSQL_POLLING_READING)
            $r = [pg_socket($c)];
        else
            $w = [pg_socket($c)];
        stream_select($r, $w, $e, 1);
    }
}
