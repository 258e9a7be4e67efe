<?php
// connect.php: one request of a PHP-FPM worker: connect (PG* from the pool's env[] lines), ask the backend pid, close.
$c = pg_connect("application_name=pqd_php_fpm");
if ($c === false) {
    echo "error: connect failed\n";
    exit(1);
}
$r = pg_query($c, "SELECT pg_backend_pid()");
echo "worker=" . getmypid() . " backend=" . pg_fetch_result($r, 0, 0) . "\n";
pg_close($c);
