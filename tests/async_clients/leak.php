<?php
// tests/async_clients/leak.php: PHP CLI pg_connect with PGSQL_CONNECT_ASYNC (PQconnectStart + pg_connect_poll) leaking connections from several processes at once.
//
// Usage: php leak.php PROCESSES EACH APP
// PHP's CLI has no threads: the workers are processes (pcntl_fork, before any connect), each
// with its own connections (and, under pqdedup, its own pool). The protocol is leak.py's: each
// worker connects EACH times, checks SELECT pg_backend_pid(), ID and keeps the connection;
// it stops at a failed connect. Each reports to the parent on a socket pair and waits there;
// once every worker has stopped connecting, the parent lets them all recheck their connections
// (SELECT ID * 7) at once, and prints the result line.

error_reporting(E_ALL);
require __DIR__ . '/../matrix/php_connect_async.php';
if ($argc != 4 || !ctype_digit($argv[1]) || !ctype_digit($argv[2])) {
    fwrite(STDERR, "usage: php leak.php PROCESSES EACH APP\n");
    exit(2);
}
[, $procs, $each, $app] = $argv;
$last_error = '';
// PHP's warnings (a failed connect's) are kept here, so nothing reaches stderr unless unexpected.
set_error_handler(function ($no, $str) use (&$last_error) {
    $last_error = $str;
    return true;
});

// The row of $sql, whose last column must be $want; exits 1 otherwise.
function answer($c, $sql, $want, $what) {
    $r = pg_query($c, $sql);
    $row = $r === false ? false : pg_fetch_row($r);
    if ($row === false || (int)end($row) !== $want) {
        fwrite(STDERR, "leak.php: $what: " . ($r === false ? pg_last_error($c) : 'got ' . json_encode($row)) . "\n");
        exit(1);
    }
    return $row;
}

// A worker: leaks, reports "ok PIDS|refusal", waits for "go", rechecks, reports "recheck Q".
function worker($index, $each, $app, $sock) {
    global $last_error;
    $kept = [];
    $pids = [];
    $refusal = '';
    for ($j = 1; $j <= $each; $j++) {
        $id = $index * 1000 + $j;
        $c = connect_async("application_name=$app");
        if ($c === null) {
            $refusal = preg_replace('/\s+/', ' ', trim($last_error));
            break;
        }
        $pids[] = answer($c, "SELECT pg_backend_pid(), $id", $id, "connect $id")[0];
        $kept[$id] = $c;
    }
    fwrite($sock, json_encode(['pids' => $pids, 'refusal' => $refusal]) . "\n");
    if (trim(fgets($sock)) !== 'go')
        exit(1);
    $recheck = 0;
    foreach ($kept as $id => $c) {
        answer($c, "SELECT $id * 7", $id * 7, "leaked connection $id");
        $recheck++;
    }
    fwrite($sock, "$recheck\n");
    exit(0);  // the leaked connections ($kept) are still referenced: PHP closes them at exit
}

$children = [];
for ($i = 1; $i <= $procs; $i++) {
    [$parent_end, $child_end] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
    $pid = pcntl_fork();
    if ($pid < 0) {
        fwrite(STDERR, "leak.php: fork failed\n");
        exit(1);
    }
    if ($pid === 0) {
        fclose($parent_end);
        worker($i, (int)$each, $app, $child_end);
    }
    fclose($child_end);
    $children[$pid] = $parent_end;
}
$pids = [];
$refusals = [];
$ok = 0;
foreach ($children as $sock) {
    $report = json_decode((string)fgets($sock), true);
    if (!is_array($report))
        continue;  // the worker failed: its exit status says so below
    $ok += count($report['pids']);
    $pids = array_merge($pids, $report['pids']);
    if ($report['refusal'] !== '')
        $refusals[] = $report['refusal'];
}
foreach ($children as $sock)
    fwrite($sock, "go\n");
$recheck = 0;
foreach ($children as $sock)
    $recheck += (int)fgets($sock);
$failed = 0;
foreach ($children as $pid => $sock) {
    pcntl_waitpid($pid, $status);
    if (!pcntl_wifexited($status) || pcntl_wexitstatus($status) !== 0) {
        fwrite(STDERR, "leak.php: worker $pid failed (status $status)\n");
        $failed++;
    }
}
if ($refusals)
    echo 'async-refused: ', $refusals[0], "\n";
printf("async-result ok=%d refused=%d recheck=%d pids=%d\n", $ok, count($refusals), $recheck,
       count(array_unique($pids)));
exit($failed ? 1 : 0);
