<?php
// php_client.php MODE CYCLES APP: PHP's pgsql and PDO extensions (loaded with RTLD_DEEPBIND) churning connections.
//
// MODE: connect (pg_connect, new each time), async (pg_connect with PGSQL_CONNECT_ASYNC and a
// pg_connect_poll loop), pconnect (pg_pconnect: PHP keeps one persistent link and finishes it
// at shutdown), pdo (new PDO('pgsql:...'), dropped each time). Each cycle runs
// SELECT pg_backend_pid() and prints it on its own line; then "done".
// Connection parameters come from the PG* environment; APP is the application_name.
[, $mode, $cycles, $app] = $argv;
$conninfo = "application_name=$app";
for ($i = 0; $i < (int) $cycles; $i++) {
    switch ($mode) {
    case 'connect':
        $c = pg_connect($conninfo, PGSQL_CONNECT_FORCE_NEW);
        break;
    case 'async':
        $c = pg_connect($conninfo, PGSQL_CONNECT_ASYNC | PGSQL_CONNECT_FORCE_NEW);
        for (;;) {
            $p = pg_connect_poll($c);
            if ($p == PGSQL_POLLING_OK) break;
            if ($p == PGSQL_POLLING_FAILED) { fwrite(STDERR, "async connect failed\n"); exit(1); }
            $r = [pg_socket($c)]; $w = $r; $e = null;
            stream_select($r, $w, $e, 10);
        }
        break;
    case 'pconnect':
        $c = pg_pconnect($conninfo);
        break;
    case 'pdo':
        $d = new PDO("pgsql:host=" . getenv('PGHOST') . ";port=" . getenv('PGPORT') .
                     ";dbname=" . getenv('PGDATABASE') . ";application_name=$app", getenv('PGUSER'));
        echo $d->query("SELECT pg_backend_pid()")->fetchColumn(), "\n";
        $d = null;
        continue 2;
    default:
        fwrite(STDERR, "unknown mode $mode\n"); exit(2);
    }
    if ($c === false) { fwrite(STDERR, "connect failed\n"); exit(1); }
    echo pg_fetch_result(pg_query($c, "SELECT pg_backend_pid()"), 0, 0), "\n";
    pg_close($c);
}
echo "done\n";
