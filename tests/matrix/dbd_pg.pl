#!/usr/bin/perl
# tests/matrix/dbd_pg.pl: Perl DBI + DBD::Pg (Debian libdbd-pg-perl), a DBI->connect per unit of work, churned or leaked; one matrix client.
#
# Usage: dbd_pg.pl churn|leak N APP
# The protocol (result line, refusals, exit status) is described in matrix_common.py. A leak
# pushes each database handle onto an array and never disconnects it.
use strict;
use warnings;
use DBI;

my ($mode, $n, $app) = @ARGV;
die "usage: $0 churn|leak N APP\n"
    unless @ARGV == 3 && ($mode eq 'churn' || $mode eq 'leak') && $n =~ /^\d+$/;

# Connects with DBI's error reporting off: a refused connect is data (matrix-refused), and a
# query error is turned into an exit 1 by query().
sub connect_app {
    my ($name) = @_;
    return DBI->connect("dbi:Pg:application_name=$name", '', '',
                        { AutoCommit => 1, RaiseError => 0, PrintError => 0, PrintWarn => 0 });
}

sub query {
    my ($dbh, $sql) = @_;
    my @row = $dbh->selectrow_array($sql);
    if (!@row) {
        print STDERR "matrix: $sql: ", ($dbh->errstr // 'no row'), "\n";
        exit 1;
    }
    return @row;
}

my $obs = connect_app("${app}_obs") or do { print STDERR "matrix: observer: $DBI::errstr\n"; exit 1 };
my ($max_conn) = query($obs, 'SHOW max_connections');
my (%pids, @kept);
my ($ok, $refused_at) = (0, 0);
for my $i (1 .. $n) {
    my $dbh = connect_app($app);
    if (!$dbh) {
        $refused_at = $i;
        (my $msg = $DBI::errstr // '') =~ s/\s+/ /g;
        print "matrix-refused: $msg\n";
        last;
    }
    my ($pid, $echo) = query($dbh, "SELECT pg_backend_pid(), $i");
    if ($echo != $i) {
        print STDERR "matrix: cycle $i: SELECT returned $echo\n";
        exit 1;
    }
    $pids{$pid} = 1;
    $ok++;
    if ($mode eq 'churn') {
        $dbh->disconnect;
    } else {
        push @kept, [$i, $dbh];
    }
}
my $recheck = 0;
for my $k (@kept) {
    my ($v) = query($k->[1], "SELECT $k->[0] * 7");
    if ($v != $k->[0] * 7) {
        print STDERR "matrix: leaked handle $k->[0]: SELECT returned $v\n";
        exit 1;
    }
    $recheck++;
}
my ($backends) = query($obs,
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$app'");
printf "matrix-result mode=%s n=%d ok=%d pids=%d backends=%d max_conn=%d refused_at=%d recheck=%d\n",
    $mode, $n, $ok, scalar(keys %pids), $backends, $max_conn, $refused_at, $recheck;
# The leaked handles (and the observer) are still referenced here; DBI destroys them at exit.
exit 0;
