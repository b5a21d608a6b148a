#!/usr/bin/perl
# MySQL connection pools under load and faults (SPEC 5 "Pools", issue 3),
# counted on the server side (information_schema.PROCESSLIST, SHOW GLOBAL
# STATUS), with a MySQL-only configuration so that every lookup is a query:
#   - sustained concurrent load: the module's connections never exceed
#     pool_size x workers, every request succeeds (a thread that finds every
#     connection busy waits within its budget), and later lookups reuse the
#     same connections (same PROCESSLIST ids, no new server connection);
#   - a pool exhausted for longer than the budget (MySQL frozen, pool_size=1)
#     fails cleanly with 503 at the budget and opens no extra connection;
#   - MariaDB restarted mid-load: only requests in flight during the outage
#     fail (503 with the SPEC body, never a hang), requests succeed again as
#     soon as it is back, no worker crashes;
#   - MariaDB restarted while the pooled connections sit idle: the broken
#     connections are replaced and no request fails.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid wait_until);
use Bytemark::Load qw(http_raw send_raw read_raw freeze mysql_conns mysql_conn_ids mysql_status summary);

my $JSON = JSON::PP->new->utf8;

my $t = Bytemark::Test->new(mysql => 1);

sub conf {
    my (%o) = @_;
    my $mysql = $t->mysql_directive(pool_size => $o{pool_size});
    return <<"EOF";
    bytemark_mysql $mysql;
    bytemark_mysql_timeout $o{timeout};
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
    }
EOF
}

# users 1..40, user u has (u % 3) + 1 passes
my @rows;
for my $u (1 .. 40) {
    for my $k (0 .. $u % 3) {
        my $n = $u * 10 + $k;
        push @rows, sprintf("(%d, '%s', 3, 'active', 0, '{}', NULL, %d)", $u, uuid($n), 1732000000000 + $n);
    }
}
$t->sql('INSERT INTO bytemark_pass (user_id, pass_uuid, version, status, free_ticket_status, '
        . 'payload, payload_hash, timestamp) VALUES ' . join(', ', @rows));

my @paths = map { "/t?user_id=$_" } 1 .. 40;

# run in the clients: the body is the right user's, with all of its passes
sub check {
    my ($path, $r) = @_;
    return "status $r->{status}" unless $r->{status} == 200;
    my ($u) = $path =~ /user_id=(\d+)/;
    my $j = eval { $JSON->decode($r->{body}) } or return "not JSON: $r->{body}";
    return "wrong user $j->{user_id}" unless $j->{user_id} == $u;
    return 'passes: ' . scalar(@{ $j->{passes} }) unless @{ $j->{passes} } == $u % 3 + 1;
    return 'source ' . ($r->{headers}{'x-bytemark-source'} // '')
        unless ($r->{headers}{'x-bytemark-source'} // '') eq 'mysql';
    return;
}

sub failures {
    my ($recs) = @_;
    return grep { $_->{status} != 200 || $_->{error} } @$recs;
}

# --- sustained load: bounded and reused --------------------------------------------------

my $POOL = 2;
my $WORKERS = 2;
# 4 threads per worker share 2 connections: threads do wait for one
$t->start_nginx(conf(pool_size => $POOL, timeout => '5s'), workers => $WORKERS,
                thread_pool => 'threads=4 max_queue=65536');
my @workers = sort $t->worker_pids;
is mysql_conns($t), 0, 'no connection before the first request (opened lazily)';

my $load = Bytemark::Load->start($t, clients => 4, requests => 250, paths => \@paths,
                                 check => \&check);
my @samples;
while ($load->running) {
    push @samples, mysql_conns($t);
    sleep 0.02;
}
my $recs = $load->finish;
my ($max) = sort { $b <=> $a } @samples;
is scalar(@$recs), 1000, '4 clients x 250 requests ran';
is_deeply [map { "$_->{path}: $_->{status} " . ($_->{error} // '') } failures($recs)], [],
    'every request succeeded with the right passes from MySQL';
ok @samples >= 3, scalar(@samples) . ' samples of the server-side connection count during the load';
ok $max <= $POOL * $WORKERS, "the module's connections never exceeded pool_size x workers = "
                             . $POOL * $WORKERS . " (max seen: $max)";
ok $max >= 1, 'the count saw the connections in use';

# the same connections serve what follows
my $before_ids = mysql_conn_ids($t);
my $c0 = mysql_status($t, 'Connections');
$load = Bytemark::Load->start($t, clients => 2, requests => 50, paths => \@paths, check => \&check);
1 while $load->running && sleep 0.05;
$recs = $load->finish;
my $c1 = mysql_status($t, 'Connections');
my $after_ids = mysql_conn_ids($t);
is_deeply [map { "$_->{path}: $_->{status}" } failures($recs)], [], 'another 100 requests succeed';
is $c1 - $c0, 1, 'the server saw no new connection for them (Connections grew by our own query only)';
is_deeply [sort keys %$after_ids], [sort keys %$before_ids],
    'the same server connections (PROCESSLIST ids) before and after: reused';
ok keys(%$after_ids) <= $POOL * $WORKERS, 'still within pool_size x workers';
is_deeply [sort $t->worker_pids], \@workers, 'the same workers: nothing crashed';

# --- pool exhausted longer than the budget: clean 503, no extra connection ------------------

$t->reload_nginx(conf(pool_size => 1, timeout => '1s'), workers => 1);
ok wait_until(sub { (my @k = Bytemark::Load::nginx_children($t)) == 1 }, 15), 'old workers gone';
my $r = http_raw($t->nginx_port, '/t?user_id=1');
is $r->{status}, 200, 'pool_size=1: a lookup opens the one connection';
is mysql_conns($t), 1, 'one connection';
my $c2 = mysql_status($t, 'Connections');
freeze($t, 'mysql');
my @slow = map { send_raw($t->nginx_port, "/t?user_id=$_") } 1 .. 4;
my @res = map { read_raw($_) } @slow;
$t->resume_mysql;
for my $x (@res) {
    my $took = $x->{t1} - $x->{t0};
    ok $x->{status} == 503 && $x->{body} =~ /^\{"error":"unavailable","message":"[^"]+"\}$/
       && $took < 1 + 1.5,
       sprintf('MySQL frozen, 4 lookups for 1 connection: 503 within the 1 s budget (%.2f s)', $took)
        or diag "$x->{status} $x->{body} " . ($x->{error} // '');
}
like $t->error_log, qr/all 1 connections to mysql server #1 are busy/,
    'the lookups that found the pool exhausted say so in the log';
ok wait_until(sub { http_raw($t->nginx_port, '/t?user_id=2')->{status} == 200 }, 10),
    'lookups succeed again once MySQL is back';
sleep 0.5;
my $c3 = mysql_status($t, 'Connections');
ok $c3 - $c2 <= 2, 'no extra connection was opened while the pool was exhausted (Connections '
                   . "$c2 -> $c3: at most one replacement and our own query)";
ok mysql_conns($t) <= 1, 'still at most pool_size connections';

# --- MariaDB restarted mid-load ------------------------------------------------------------

$t->reload_nginx(conf(pool_size => $POOL, timeout => '2s'), workers => $WORKERS);
ok wait_until(sub { (my @k = Bytemark::Load::nginx_children($t)) == $WORKERS }, 15), 'old worker gone';
@workers = sort $t->worker_pids;
$load = Bytemark::Load->start($t, clients => 4, paths => \@paths, pause => 0.01, timeout => 20);
sleep 1;
my $t_down = time;
$t->stop_mysql;
sleep 0.5;
$t->start_mysql;
my $t_back = time;
sleep 3;
$recs = $load->finish;
my @before = grep { $_->{t1} < $t_down } @$recs;
my @outage = grep { $_->{t1} >= $t_down && $_->{t0} < $t_back } @$recs;
my @after  = grep { $_->{t0} >= $t_back } @$recs;
note sprintf 'restart took %.1f s; %s; before: %d, overlapping the outage: %d, after: %d',
    $t_back - $t_down, summary($recs), scalar(@before), scalar(@outage), scalar(@after);
ok @before > 20 && @outage > 5 && @after > 20, 'the load ran before, during and after the outage';
is_deeply [map { "$_->{status}" } failures(\@before)], [], 'before the restart: every request succeeded';
my @wrong = grep {
    !($_->{status} == 200 || ($_->{status} == 503 && !$_->{error}
        && ($_->{body} // '') =~ /^\{"error":"unavailable","message":"[^"]+"\}$/
        && ($_->{retry_after} // '') =~ /^\d+$/))
} @$recs;
is_deeply [map { "$_->{path}: $_->{status} " . ($_->{error} // '') . ' ' . ($_->{body} // '') } @wrong], [],
    'every failure is a 503 with the SPEC error body and Retry-After: no hang, no reset';
my ($slowest) = sort { $b <=> $a } map { $_->{t1} - $_->{t0} } @$recs;
ok $slowest < 2 + 2, sprintf('no request waited past its 2 s budget (slowest %.2f s)', $slowest);
my @late = grep { $_->{status} != 200 } @after;
is_deeply [map { sprintf '%s: %d at +%.2fs', $_->{path}, $_->{status}, $_->{t0} - $t_back } @late], [],
    'every request sent once MariaDB was back succeeded (only requests in flight during the outage may fail)';
is_deeply [sort $t->worker_pids], \@workers, 'the same workers: nothing crashed';
ok mysql_conns($t) <= $POOL * $WORKERS, 'connections within pool_size x workers after the restart';

# --- MariaDB restarted while the pooled connections sit idle --------------------------------

# open every pooled connection (2 per worker), then leave them idle
$load = Bytemark::Load->start($t, clients => 4, requests => 50, paths => \@paths);
1 while $load->running && sleep 0.05;
$load->finish;
my $idle = mysql_conns($t);
ok $idle >= 3, "$idle idle pooled connections";
my $log_at = length $t->error_log;
$t->stop_mysql;
$t->start_mysql;
my @seq = map { http_raw($t->nginx_port, $paths[$_ % @paths]) } 0 .. 9;
is join(' ', map { $_->{status} } @seq), join(' ', (200) x 10),
    'MariaDB restarted while idle: the broken connections are replaced, no request fails'
    or diag join "\n", grep { /bytemark: mysql/ } split /\n/, substr($t->error_log, $log_at);
is_deeply [sort $t->worker_pids], \@workers, 'the same workers: nothing crashed';

$t->stop_nginx;
unlike $t->error_log, qr/\[(alert|emerg)\]|exited on signal/, 'no alert, no crash';
ok wait_until(sub { mysql_conns($t) == 0 }, 10), 'nginx stopped: every connection closed';

done_testing;
