#!/usr/bin/perl
# A MySQL query error is not a server failure (issue 24, item 6): the
# primary answers, with an SQL error (its table renamed away), so the read
# ends there with 503 — a replica would run the same statement — instead of
# failing over; it counts as bytemark_backend_errors_total{kind="query"},
# never as "connect", and the circuit breaker does not open however many
# such errors come in a row: once the table is back, the primary answers at
# once. A primary and a real replica (MariaDB replication): the pass is
# written on the primary and replicated, then the replica's SQL thread is
# paused and the pass rewritten on the primary, so the status says which
# server answered.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass wait_until);

my $t = Bytemark::Test->new(mysql => 1, binlog => 1);             # the primary
my $replica = Bytemark::Test->new(mysql => 1, replica_of => $t);  # replicates from it

add_pass($t, user => 1, uuid => uuid(1), status => 'replica');
$replica->wait_replicated;
$replica->pause_replication;
$t->sql("UPDATE bytemark_pass SET status = 'primary' WHERE pass_uuid = '" . uuid(1) . "'");

my $primary_dir = $t->mysql_directive;
my $replica_dir = $replica->mysql_directive;
$t->start_nginx(<<"EOF");
    bytemark_mysql $primary_dir;
    bytemark_mysql $replica_dir;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location ~ ^/users/(\\d+)/passes/([^/]+)\$ {
            bytemark_user_id \$1; bytemark_pass_uuid \$2; bytemark_pass;
        }
        location = /status { bytemark_status; }
    }
EOF

sub who {
    my $r = $t->get('/t?user_id=1');
    return "$r->{status}" unless $r->{status} == 200;
    return $t->json($r)->{passes}[0]{status} // 'no pass';
}

sub who_pass {
    my $r = $t->get('/users/1/passes/' . uuid(1));
    return "$r->{status}" unless $r->{status} == 200;
    return $t->json($r)->{pass}{status};
}

sub status { $t->json($t->get('/status')) }

is who(), 'primary', 'baseline: the primary answers';
is who_pass(), 'primary', 'the pass too';

# --- the primary's table is gone: an SQL error, not a failed server ------------------

# sql_log_bin=0: the RENAME stays off the binary log (it would replicate),
# so the replica keeps its table, as a replica whose copy is fine would.
$t->sql('SET sql_log_bin = 0; RENAME TABLE bytemark_pass TO bytemark_pass_away');
is_deeply $replica->sql("SHOW TABLES LIKE 'bytemark_pass'"), [['bytemark_pass']],
    'the replica still has its table';

my @got = map { who() } 1 .. 7;
is_deeply \@got, [('503') x 7], 'tickets: 503 each time, never the replica\'s answer';
is who_pass(), '503', 'pass: 503, not the replica';

my $s = status();
is_deeply $s->{bytemark_backend_errors_total}{mysql},
    { query => 8, connect => 0, timeout => 0, breaker_open => 0 },
    'counted as query errors, never connect';
is $s->{bytemark_breaker_open}{mysql}{1}, 0, 'the primary\'s breaker stays closed after 8 in a row';
like $t->error_log, qr/\[error\] .*bytemark: mysql tickets query for user 1 failed after \d+ ms: .*bytemark_pass.*doesn't exist/,
    'the cause is logged';

# --- the table back: the primary answers at once ------------------------------------

$t->sql('SET sql_log_bin = 0; RENAME TABLE bytemark_pass_away TO bytemark_pass');
is who(), 'primary', 'table back: the primary answers at once (no breaker, no failover)';
is who_pass(), 'primary', 'the pass too';

# a replica is still used when the primary really fails
$t->stop_mysql;
is who(), 'replica', 'primary stopped: the replica answers';
$s = status();
ok $s->{bytemark_backend_errors_total}{mysql}{connect} >= 1, 'that one is a connect error';

# replication resumes cleanly: the renames never reached the replica
$replica->resume_replication;
$t->start_mysql;
$replica->wait_replicated;
is_deeply $replica->sql("SELECT status FROM bytemark_pass WHERE pass_uuid = '" . uuid(1) . "'"),
    [['primary']], 'replication resumed: the replica has the primary\'s update, no SQL error';

$t->stop_nginx;
done_testing;
