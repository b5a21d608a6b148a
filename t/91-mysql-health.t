#!/usr/bin/perl
# Per-server passive health of MySQL servers (issue 26), with real MariaDB
# replication (a primary with a binary log, a replica of it):
# - the server written as nginx writes upstream servers: "addr:port" for
#   the primary, "unix:/path" for the replica; $bytemark_mysql_server says
#   which one answered (the body agrees: the replica's SQL thread is paused
#   and the pass rewritten on the primary, so each has its own status);
# - primary killed (connection refused), max_fails=3: three reads try it,
#   then none does; every answer comes from the replica; the error log says
#   once that it went down, and no read after that logs a line;
# - primary restarted: it stays out for fail_timeout, then one read probes
#   it and it is back, said once;
# - primary frozen (SIGSTOP), max_fails=2: two reads pay its budget slice,
#   then reads go straight to the replica;
# - without max_fails= (the default: health off), every read tries the dead
#   primary and logs it, as before.
# Also nginx -t on the new forms of bytemark_mysql.

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

# --- nginx -t: the forms of bytemark_mysql --------------------------------------------------

{
    my $c = Bytemark::Test->new();
    my $loc = 'server { listen 127.0.0.1:%%PORT%%; location /t { bytemark_user_id $arg_user_id; bytemark_tickets; } }';
    my $ok = sub {
        my ($mysql, $name) = @_;
        my ($rc, $out) = $c->nginx_test("$mysql\n$loc");
        is $rc, 0, "accepted: $name" or diag $out;
    };
    my $bad = sub {
        my ($mysql, $re, $name) = @_;
        my ($rc, $out) = $c->nginx_test("$mysql\n$loc");
        ok $rc != 0 && $out =~ $re, "rejected: $name" or diag "rc=$rc: $out";
        unlike $out, qr/TopSecret-1/, "$name: no password in the message";
    };
    my $u = 'user=u password=TopSecret-1 database=portal';
    $ok->("bytemark_mysql 127.0.0.1:3306 $u;", 'addr:port');
    $ok->("bytemark_mysql 127.0.0.1 $u;", 'addr without a port (3306)');
    $ok->("bytemark_mysql [::1]:3307 $u;", 'an IPv6 address with a port');
    $ok->("bytemark_mysql localhost:3306 $u;", 'a name with a port');
    $ok->("bytemark_mysql unix:/run/mysqld/mysqld.sock $u;", 'unix:/path');
    $ok->("bytemark_mysql 127.0.0.1:3306 $u max_fails=3 fail_timeout=10s;\n"
          . "bytemark_mysql 127.0.0.1:3307 $u max_fails=0;", 'max_fails= and fail_timeout=, max_fails=0');
    $ok->("bytemark_mysql 127.0.0.1:3306 $u fail_timeout=30s;", 'fail_timeout= alone (max_fails=1)');
    $ok->("bytemark_mysql host=127.0.0.1 port=3306 $u max_fails=2;", 'max_fails= with host=');
    $bad->("bytemark_mysql 127.0.0.1:3306 host=127.0.0.1 $u;",
           qr/"bytemark_mysql" directive takes the server as "addr:port" or "unix:\/path", or as "host="/,
           'addr:port and host= together');
    $bad->("bytemark_mysql unix:/run/m.sock socket=/run/m.sock $u;", qr/"bytemark_mysql" directive takes the server/,
           'unix: and socket= together');
    $bad->("bytemark_mysql 127.0.0.1 port=3307 $u;", qr/"bytemark_mysql" directive takes the server/,
           'addr and port= together');
    $bad->("bytemark_mysql 127.0.0.1:99999 $u;", qr/"bytemark_mysql" server "127\.0\.0\.1:99999": invalid port/,
           'a port out of range');
    $bad->("bytemark_mysql 127.0.0.1:3306/x $u;", qr/"bytemark_mysql" server "127\.0\.0\.1:3306\/x"/,
           'a URI part');
    $bad->("bytemark_mysql unix: $u;", qr/"bytemark_mysql" directive needs a path after "unix:"/, 'unix: without a path');
    $bad->("bytemark_mysql no-such-host.invalid:3306 $u;", qr/"bytemark_mysql" host "no-such-host\.invalid": host not found/,
           'a name that does not resolve');
    $bad->("bytemark_mysql 127.0.0.1:3306 $u max_fails=-1;", qr/"bytemark_mysql" has an invalid parameter #5/,
           'max_fails=-1');
    $bad->("bytemark_mysql 127.0.0.1:3306 $u fail_timeout=0;", qr/"bytemark_mysql" has an invalid parameter #5/,
           'fail_timeout=0');
    $bad->("bytemark_mysql 127.0.0.1:3306 $u max_fails=2 max_fails=3;", qr/"bytemark_mysql" has an invalid parameter #6/,
           'max_fails= twice');
}

# --- a primary and its replica ----------------------------------------------------------------

my $t = Bytemark::Test->new(mysql => 1, binlog => 1);
my $replica = Bytemark::Test->new(mysql => 1, replica_of => $t);

my $cred = join ' ', 'user=' . $t->mysql_user, 'password=' . $t->mysql_password, 'database=' . $t->mysql_db;
my $P = '127.0.0.1:' . $t->mysql_port;            # the primary, as written
my $R = 'unix:' . $replica->mysql_socket;         # the replica, as written

sub conf {
    my ($health) = @_;
    return <<"EOF";
    bytemark_mysql $P $cred $health;
    bytemark_mysql $R $cred;
    bytemark_mysql_timeout 1s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t {
            bytemark_user_id \$arg_user_id; bytemark_tickets;
            add_header X-Server \$bytemark_mysql_server always;
        }
        location ~ ^/users/(\\d+)/passes\$ {
            bytemark_user_id \$1; bytemark_ingest;
            add_header X-Server \$bytemark_mysql_server always;
        }
    }
EOF
}

$t->start_nginx(conf('max_fails=3 fail_timeout=6s'), workers => 2);
my $port = $t->nginx_port;
my @workers = sort $t->worker_pids;

# "status server": the pass's status in the body (who has it) and the header
sub who {
    my $r = http_raw($port, '/t?user_id=1');
    return "$r->{status} " . ($r->{error} // $r->{body}) unless $r->{status} == 200;
    my $j = $JSON->decode($r->{body});
    return ($j->{passes}[0]{status} // 'no pass') . ' ' . ($r->{headers}{'x-server'} // '-');
}

sub ingest {
    my ($n, $status) = @_;
    return http_raw($port, '/users/1/passes', method => 'POST',
                    headers => { 'Content-Type' => 'application/json' },
                    body => $JSON->encode({ pass_uuid => uuid($n), status => $status }));
}

# the error log from a given length on
sub log_since { substr($t->error_log, $_[0]) }
sub count { my ($re, $text) = @_; my $n = () = $text =~ /$re/g; $n }

my $r = ingest(1, 'replica');
is $r->{status}, 200, 'ingest 200';
is $r->{headers}{'x-server'}, $P, '$bytemark_mysql_server of an ingest: the primary, as written';
$replica->wait_replicated;
$replica->pause_replication;
$r = ingest(1, 'primary');
is $r->{status}, 200, 'ingest 200 (replication paused)';

is_deeply [map { who() } 1 .. 6], [("primary $P") x 6], 'both up: reads from the primary, and the variable says so';

my $down_re = qr/\[warn\] .*bytemark: mysql server \Q$P\E is down after 3 failures in 6s: cannot connect/;
my $back_re = qr/\[notice\] .*bytemark: mysql server \Q$P\E is back/;
my $fail_re = qr/mysql tickets query for user 1 failed/;

# --- primary killed: three reads try it, then none -------------------------------------------

my $mark = length $t->error_log;
$t->stop_mysql(fast => 1);
my $t_down = time;
my @w = map { who() } 1 .. 20;
is_deeply \@w, [("replica $R") x 20], 'primary killed: every read comes from the replica (unix:, as written)';
my $log = log_since($mark);
is count($down_re, $log), 1, 'the error log says once that the primary is down, naming it and the cause'
    or diag $log;
is count($fail_re, $log), 3, 'only the max_fails=3 reads that tried it logged a failure' or diag $log;

# many at once, over both workers: nobody tries the primary, nobody logs
my $mark2 = length $t->error_log;
my @pids;
for my $k (1 .. 4) {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        my $bad = 0;
        for (1 .. 25) { $bad++ unless who() eq "replica $R" }
        exit($bad ? 1 : 0);
    }
    push @pids, $pid;
}
my $bad = 0;
for (@pids) { waitpid $_, 0; $bad++ if $? }
is $bad, 0, '100 concurrent reads: all from the replica';
$log = log_since($mark2);
is count(qr/\[(warn|error)\]/, $log), 0, 'and none of them logged a line (none tried the primary)' or diag $log;

$r = ingest(2, 'lost');
ok $r->{status} == 503 && $r->{t1} - $r->{t0} < 0.5, 'a write while the primary is down: 503 at once, no try'
    or diag "$r->{status} $r->{body} in " . ($r->{t1} - $r->{t0});
is $r->{headers}{'x-server'}, undef, 'no server answered it: no X-Server';

# --- primary back: out for fail_timeout, then one probe, back once ------------------------------

$t->start_mysql;
my ($t_back, @before);
ok wait_until(sub { my $w = who(); push @before, $w; $t_back = time; $w eq "primary $P" }, 40),
    'primary restarted: reads return to it';
ok $t_back - $t_down >= 6 - 0.5,
    sprintf('not before its fail_timeout (6s) was over: back after %.1f s', $t_back - $t_down);
pop @before;
is_deeply [grep { $_ ne "replica $R" } @before], [], 'until then, every read from the replica ('
    . scalar(@before) . ' reads)';
is_deeply [map { who() } 1 .. 6], [("primary $P") x 6], 'then every read from the primary';
$log = log_since($mark);
is count($back_re, $log), 1, 'the error log says once that it is back' or diag $log;
is count($down_re, $log), 1, 'still one "down" line for the whole outage (failed probes say nothing)';

# --- primary frozen: two reads pay its slice, then none --------------------------------------

$t->reload_nginx(conf('max_fails=2 fail_timeout=30s'));
sleep 1;
is who(), "primary $P", 'reloaded with max_fails=2: reads from the primary';
$mark = length $t->error_log;
freeze($t, 'mysql');
my @slow = map { my $t0 = time; my $w = who(); [$w, time - $t0] } 1 .. 8;
is_deeply [map { $_->[0] } @slow], [("replica $R") x 8], 'primary frozen: every read from the replica';
my @paid = grep { $_->[1] > 0.4 } @slow;
ok @paid <= 2, sprintf('at most max_fails=2 reads paid the frozen primary\'s slice (%s s)',
                       join(', ', map { sprintf '%.2f', $_->[1] } @slow));
ok $slow[-1][1] < 0.4 && $slow[-2][1] < 0.4, 'the last reads did not wait for it (its slice is 0.5 s)';
ok wait_until(sub { count(qr/mysql server \Q$P\E is down after 2 failures in 30s: no answer within the budget/,
                          log_since($mark)) == 1 }, 5),
    'one "down" line, the cause a spent budget' or diag "log: " . log_since($mark);
$t->resume_mysql;

# --- max_fails=0 (and no max_fails= at all): every read tries the dead primary ------------------

$t->reload_nginx(conf('max_fails=0'));
sleep 1;
$t->stop_mysql(fast => 1);
$mark = length $t->error_log;
is_deeply [map { who() } 1 .. 5], [("replica $R") x 5], 'max_fails=0: reads from the replica';
$log = log_since($mark);
is count($fail_re, $log), 5, 'each of them tried the primary and logged it, as before';
is count(qr/is down after/, $log), 0, 'no "down" line';

$t->reload_nginx(conf(''));
sleep 1;
$mark = length $t->error_log;
is_deeply [map { who() } 1 .. 5], [("replica $R") x 5], 'no max_fails=: reads from the replica';
$log = log_since($mark);
is count($fail_re, $log), 5, 'each of them tried the primary (health is off by default)';
$t->start_mysql;

is scalar(my @now = $t->worker_pids), scalar(@workers), 'as many workers as at the start';
$t->stop_nginx;
$log = $t->error_log;
unlike $log, qr/\[(alert|emerg)\]|exited on signal/, 'no alert, no crash';
unlike $log, qr/s3cret-pw/, 'no password in the error log';

done_testing;
