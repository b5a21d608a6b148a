#!/usr/bin/perl
# MySQL read replicas (SPEC 4 bytemark_mysql, issue 3), with real MariaDB
# replication: a primary with a binary log and a replica that starts empty
# and gets users, schema and rows from it (GTID, CHANGE MASTER TO).
# A write through the module (bytemark_ingest) reaches the replica through
# replication. To tell which server answered, the replica's SQL thread is
# then paused and the pass rewritten through the module: the primary says
# 'primary', the replica still has the replicated 'replica'.
# Reads come from the primary; primary stopped -> from the replica (its
# replicated data); primary back -> from the primary again, at once. Writes
# (bytemark_ingest) never go to the replica: with the primary down an
# ingest is 503 and the replica gets nothing. A primary that hangs (frozen
# with SIGSTOP: it accepts connections, then says nothing) has failed too:
# after at most a few budgets, reads go to the replica and stay there, none
# paying the hung primary's budget and failing. Once replication resumes,
# the replica has every write the primary acknowledged, and nothing else.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid wait_until);
use Bytemark::Load qw(http_raw freeze);

my $JSON = JSON::PP->new->utf8->canonical;

my $t = Bytemark::Test->new(mysql => 1, binlog => 1);          # the primary
my $replica = Bytemark::Test->new(mysql => 1, replica_of => $t);  # replicates from it

is_deeply $replica->sql('SHOW TABLES'), $t->sql('SHOW TABLES'),
    'the replica started empty and has the schema through replication';

my $primary_dir = $t->mysql_directive;
my $replica_dir = $replica->mysql_directive;
$t->start_nginx(<<"EOF", workers => 2);
    bytemark_mysql $primary_dir;
    bytemark_mysql $replica_dir;
    bytemark_mysql_timeout 1s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location ~ ^/users/(\\d+)/passes/([^/]+)\$ {
            bytemark_user_id \$1; bytemark_pass_uuid \$2; bytemark_pass;
        }
        location ~ ^/users/(\\d+)/passes\$ { bytemark_user_id \$1; bytemark_ingest; }
    }
EOF
my $port = $t->nginx_port;
my @workers = sort $t->worker_pids;

# 'primary' / 'replica' / 'STATUS error' for a tickets lookup of user 1
sub who {
    my $r = http_raw($port, '/t?user_id=1');
    return "$r->{status} " . ($r->{error} // $r->{body}) unless $r->{status} == 200;
    my $j = $JSON->decode($r->{body});
    return $j->{passes}[0]{status} // 'no pass';
}

sub who_pass {
    my $r = http_raw($port, '/users/1/passes/' . uuid(1));
    return "$r->{status} $r->{body}" unless $r->{status} == 200;
    return $JSON->decode($r->{body})->{pass}{status};
}

sub ingest {
    my ($n, $status) = @_;
    return http_raw($port, '/users/1/passes', method => 'POST',
                    headers => { 'Content-Type' => 'application/json' },
                    body => $JSON->encode({ pass_uuid => uuid($n), status => $status }));
}

sub count_rows {
    my ($db, $n) = @_;
    return $db->sql("SELECT COUNT(*) FROM bytemark_pass WHERE pass_uuid = '" . uuid($n) . "'")->[0][0];
}

sub status_on {
    my ($db, $n) = @_;
    my $rows = $db->sql("SELECT status FROM bytemark_pass WHERE pass_uuid = '" . uuid($n) . "'");
    return @$rows ? $rows->[0][0] : 'none';
}

# --- a write through the module reaches the replica -----------------------------------------

my $r = ingest(1, 'replica');
is $r->{status}, 200, 'ingest 200';
$replica->wait_replicated;
is status_on($replica, 1), 'replica', 'the ingested pass reached the replica through replication';

# --- a difference only the primary has tells who answered ---------------------------------------

$replica->pause_replication;
$r = ingest(1, 'primary');
is $r->{status}, 200, 'ingest 200 (replication paused)';
is_deeply [status_on($t, 1), status_on($replica, 1)], ['primary', 'replica'],
    'primary has the new state, the replica (SQL thread stopped) the replicated old one';

# --- both up: the primary reads and writes --------------------------------------------------

is_deeply [map { who() } 1 .. 10], [('primary') x 10], 'both up: every read comes from the primary';
is who_pass(), 'primary', 'both up: a pass lookup reads the primary';
$r = ingest(2, 'written');
is $r->{status}, 200, 'both up: ingest 200';
is_deeply [count_rows($t, 2), count_rows($replica, 2)], [1, 0],
    'the row went to the primary only (the replica applies nothing while paused)';

# --- primary hung: reads end up on the replica, and stay there ----------------------------------

freeze($t, 'mysql');
my $t_hung = time;
ok wait_until(sub { who() eq 'replica' }, 20),
    sprintf('primary hung: reads reach the replica (after %.1f s)', time - $t_hung);
my @h = map { my $w = who(); sleep 0.4; $w } 1 .. 12;
is join(', ', @h), join(', ', ('replica') x 12),
    'primary hung: from then on every read comes from the replica (none pays the hung primary\'s budget and fails)';
$t->resume_mysql;
ok wait_until(sub { who() eq 'primary' }, 15), 'primary resumed: reads return to it';

# --- primary down: reads from the replica, writes refused -------------------------------------

$t->stop_mysql;
my $t0 = time;
my @w = map { who() } 1 .. 10;
is_deeply \@w, [('replica') x 10], 'primary down: every read comes from the replica, none fails';
ok time - $t0 < 10 * 1.0, sprintf('and promptly (10 reads in %.2f s)', time - $t0);
is who_pass(), 'replica', 'primary down: a pass lookup reads the replica';

$r = ingest(3, 'lost');
my $j = eval { $JSON->decode($r->{body}) } || {};
ok $r->{status} == 503 && ($j->{error} // '') eq 'unavailable', 'primary down: ingest is 503 unavailable'
    or diag "$r->{status} $r->{body}";
is count_rows($replica, 3), 0, 'the replica got nothing';

# --- both down: 503 -----------------------------------------------------------------------------

$replica->stop_mysql;
$r = http_raw($port, '/t?user_id=1');
$j = eval { $JSON->decode($r->{body}) } || {};
ok $r->{status} == 503 && ($j->{error} // '') eq 'unavailable' && $r->{t1} - $r->{t0} < 1 + 1.5,
    'both down: 503 unavailable within the budget' or diag "$r->{status} $r->{body}";
$replica->start_mysql;
ok wait_until(sub { who() eq 'replica' }, 10), 'replica back: reads from it again';
is $replica->slave_status->{Slave_SQL_Running}, 'No', 'its SQL thread stays paused across the restart';

# --- primary back: reads return to it -------------------------------------------------------------

$t->start_mysql;
is who(), 'primary', 'primary back: the very next read comes from the primary';
is_deeply [map { who() } 1 .. 10], [('primary') x 10], 'and every read after it';
is who_pass(), 'primary', 'a pass lookup reads the primary again';
is status_on($replica, 1), 'replica',
    'the replica, restarted meanwhile, still has the old state (SQL thread still paused): the answers tell the servers apart';
is count_rows($t, 3), 0, 'the refused ingest left nothing on the primary either';
$r = ingest(4, 'written');
is $r->{status}, 200, 'primary back: ingest 200';
is_deeply [count_rows($t, 4), count_rows($replica, 4)], [1, 0], 'the row went to the primary only';

# --- replication resumed: the replica converges on what the primary acknowledged ---------------

$replica->resume_replication;
$replica->wait_replicated;
is_deeply [map { count_rows($replica, $_) } 2, 3, 4], [1, 0, 1],
    'replication resumed: the acknowledged ingests reached the replica, the refused one did not';
is status_on($replica, 1), 'primary', 'and the pass rewritten on the primary';
is who(), 'primary', 'reads still come from the primary';

is_deeply [sort $t->worker_pids], \@workers, 'the same workers: nothing crashed';
$t->stop_nginx;
my $log = $t->error_log;
unlike $log, qr/\[(alert|emerg)\]|exited on signal/, 'no alert, no crash';
unlike $log, qr/s3cret-pw/, 'no password in the error log';

done_testing;
