<?php
// tests/matrix/php_pgsql.php: PHP CLI pgsql/PDO (Debian php-pgsql): pg_connect, pg_connect async, pg_pconnect or PDO, churned or leaked; one matrix client.
//
// Usage: php php_pgsql.php churn|leak N APP connect|async|pconnect|pdo
//   connect   pg_connect (PQconnectdb), pg_close
//   async     pg_connect with PGSQL_CONNECT_ASYNC (PQconnectStart), polled with pg_connect_poll
//             and stream_select on pg_socket, pg_close
//   pconnect  pg_pconnect: PHP's own persistent connection, one per connection string per
//             process, so plain PHP already uses one backend; pg_close does not close it
//   pdo       new PDO("pgsql:..."), closed by dropping the last reference
// The protocol (result line, refusals, exit status) is described in matrix_common.py.

error_reporting(E_ALL);
require __DIR__ . '/php_connect_async.php';

function fail($msg) {
    fwrite(STDERR, "matrix: $msg\n");
    exit(1);
}

if ($argc != 5 || !in_array($argv[1], ['churn', 'leak'], true) || !ctype_digit($argv[2])
    || !in_array($argv[4], ['connect', 'async', 'pconnect', 'pdo'], true)) {
    fwrite(STDERR, "usage: php_pgsql.php churn|leak N APP connect|async|pconnect|pdo\n");
    exit(2);
}
[, $mode, $n, $app, $variant] = $argv;
$n = (int)$n;
$last_error = '';

// Each connect returns a handle or null; the failure message goes to $last_error. PHP's
// warnings are caught here, so nothing reaches stderr unless it is unexpected.
set_error_handler(function ($no, $str) use (&$last_error) {
    $last_error = $str;
    return true;
});

function connect_app($name, $variant) {
    global $last_error;
    $cs = "application_name=$name";
    switch ($variant) {
    case 'connect':
        $c = pg_connect($cs, PGSQL_CONNECT_FORCE_NEW);
        return $c === false ? null : $c;
    case 'pconnect':
        $c = pg_pconnect($cs);
        return $c === false ? null : $c;
    case 'async':
        return connect_async($cs);
    case 'pdo':
        try {
            return new PDO("pgsql:application_name=$name", null, null,
                           [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
        } catch (PDOException $e) {
            $last_error = $e->getMessage();
            return null;
        }
    }
}

function query($c, $sql) {
    global $last_error;
    if ($c instanceof PDO) {
        $row = $c->query($sql)->fetch(PDO::FETCH_NUM);
    } else {
        $r = pg_query($c, $sql);
        if ($r === false)
            fail("$sql: " . pg_last_error($c));
        $row = pg_fetch_row($r);
        pg_free_result($r);
    }
    if ($row === false)
        fail("$sql: no row");
    return $row;
}

function close_app($c) {
    if (!($c instanceof PDO))
        pg_close($c);
    // A PDO connection closes when its last reference goes (the caller's $c, next cycle).
}

$obs = connect_app("{$app}_obs", $variant === 'pdo' ? 'pdo' : 'connect');
if ($obs === null)
    fail("observer: $last_error");
$max_conn = (int)query($obs, 'SHOW max_connections')[0];
$pids = [];
$kept = [];
$ok = 0;
$refused_at = 0;
for ($i = 1; $i <= $n; $i++) {
    $c = connect_app($app, $variant);
    if ($c === null) {
        $refused_at = $i;
        echo 'matrix-refused: ', preg_replace('/\s+/', ' ', trim($last_error)), "\n";
        break;
    }
    [$pid, $echo] = query($c, "SELECT pg_backend_pid(), $i");
    if ((int)$echo !== $i)
        fail("cycle $i: SELECT returned $echo");
    $pids[$pid] = true;
    $ok++;
    if ($mode === 'churn') {
        close_app($c);
    } else {
        $kept[$i] = $c;
    }
    $c = null;
}
$recheck = 0;
foreach ($kept as $i => $c) {
    $v = (int)query($c, "SELECT $i * 7")[0];
    if ($v !== $i * 7)
        fail("leaked handle $i: SELECT returned $v");
    $recheck++;
}
$backends = (int)query($obs,
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$app'")[0];
printf("matrix-result mode=%s n=%d ok=%d pids=%d backends=%d max_conn=%d refused_at=%d recheck=%d\n",
       $mode, $n, $ok, count($pids), $backends, $max_conn, $refused_at, $recheck);
exit(0);
