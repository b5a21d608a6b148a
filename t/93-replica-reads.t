#!/usr/bin/perl
# Replica reads (issue 26 section 2): bytemark_mysql_read primary | spread,
# weight= on bytemark_mysql, read-your-writes, $bytemark_mysql_server --
# with real MariaDB replication: a primary with a binary log and two
# replicas that replicate from it (GTID). MySQL only, so that every lookup
# reads MySQL (no cache to hide where it went).
#
# spread: reads go to the replicas in the proportion of their weights
# (3:1), none to the primary, and so do lookups batched into one query;
# a write through the module reaches both replicas. With replication paused
# the replicas really lag: a user who just wrote through the module reads
# the new state from the primary for bytemark_mysql_read_your_writes, while
# another user (whose pass changed on the primary too) still reads the
# replica's old state; after the window the writer reads the replica again.
# With the window off, the writer reads the old state at once (what the
# window prevents). A chosen replica that is down: the other replica, then
# the primary, answer. primary: every read from the primary; primary
# killed: reads from a replica, with the replicated data.
# $bytemark_mysql_server names the server that answered: address:port,
# or unix:/path for a socket= server.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid wait_until);
use Bytemark::Load qw(http_raw send_raw read_raw);

my $JSON = JSON::PP->new->utf8->canonical;

my $t  = Bytemark::Test->new(mysql => 1, binlog => 1);           # the primary
my $r1 = Bytemark::Test->new(mysql => 1, replica_of => $t);
my $r2 = Bytemark::Test->new(mysql => 1, replica_of => $t);

# Newest first, also when the test dies: an older server's watchdog pipe is
# held open by the watchdogs forked after it, so the harness' cleanup in
# another order (its END walks a hash) would wait for ever. This END runs
# before the harness' one.
END { $_ && $_->cleanup for $r2, $r1, $t }

my %name = ("127.0.0.1:" . $t->mysql_port  => 'primary',
            "unix:" . $t->mysql_socket     => 'primary (socket)',
            "127.0.0.1:" . $r1->mysql_port => 'r1',
            "127.0.0.1:" . $r2->mysql_port => 'r2');

# --- nginx -t: the new directives and parameter are checked ------------------------------------

my $pd = $t->mysql_directive;
my $rd = $r1->mysql_directive;
for my $bad (["bytemark_mysql $rd weight=0;", qr/bytemark_mysql.*invalid parameter/],
             ["bytemark_mysql $rd weight=101;", qr/bytemark_mysql.*invalid parameter/],
             ["bytemark_mysql $rd weight=x;", qr/bytemark_mysql.*invalid parameter/],
             ["bytemark_mysql $rd;\n    bytemark_mysql_read sometimes;",
              qr/"bytemark_mysql_read" must be "primary" or "spread", not "sometimes"/],
             ["bytemark_mysql $rd;\n    bytemark_mysql_read spread;\n    bytemark_mysql_read primary;",
              qr/"bytemark_mysql_read" directive is duplicate/],
             ["bytemark_mysql $rd;\n    bytemark_mysql_read_your_writes soon;",
              qr/invalid value in "bytemark_mysql_read_your_writes"|"bytemark_mysql_read_your_writes" directive invalid value/]) {
    my ($rc, $out) = $t->nginx_test("bytemark_mysql $pd;\n    $bad->[0]\n"
                                    . "server { listen 127.0.0.1:%%PORT%%; }");
    ok $rc && $out =~ $bad->[1], "nginx -t refuses: $bad->[0]" or diag $out;
}
my ($rc, $out) = $t->nginx_test("bytemark_mysql $pd weight=7;\n"
                                . "bytemark_mysql $rd weight=100;\n"
                                . "bytemark_mysql_read spread;\n"
                                . "bytemark_mysql_read_your_writes off;\n"
                                . "server { listen 127.0.0.1:%%PORT%%; }");
is $rc, 0, 'nginx -t takes weight=1..100, spread and read_your_writes off' or diag $out;

# --- the configurations --------------------------------------------------------------------------

sub conf {
    my ($policy, %o) = @_;
    my $p  = $t->mysql_directive($o{socket} ? (socket => 1) : ());
    my $a  = $r1->mysql_directive(weight => 3);
    my $b  = $r2->mysql_directive;
    return <<"EOF";
    bytemark_mysql $p;
    bytemark_mysql $a;
    bytemark_mysql $b;
    bytemark_mysql_timeout 2s;
    $policy
    server {
        listen 127.0.0.1:%%PORT%%;
        add_header X-Mysql-Server \$bytemark_mysql_server always;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location ~ ^/users/(\\d+)/passes/([^/]+)\$ {
            bytemark_user_id \$1; bytemark_pass_uuid \$2; bytemark_pass;
        }
        location ~ ^/users/(\\d+)/passes\$ { bytemark_user_id \$1; bytemark_ingest; }
    }
EOF
}

my $port = $t->nginx_port;

# [server name, status of the user's first pass] of a tickets lookup
sub read_user {
    my ($user) = @_;
    my $r = http_raw($port, "/t?user_id=$user");
    return ["$r->{status}", $r->{body}] unless $r->{status} == 200;
    my $j = $JSON->decode($r->{body});
    my $srv = $r->{headers}{'x-mysql-server'} // '-';
    return [$name{$srv} // $srv, $j->{passes}[0]{status} // 'none'];
}

sub who { join ' ', @{ read_user(@_) } }

sub ingest {
    my ($user, $n, $status) = @_;
    return http_raw($port, "/users/$user/passes", method => 'POST',
                    headers => { 'Content-Type' => 'application/json' },
                    body => $JSON->encode({ pass_uuid => uuid($n), status => $status }));
}

sub executed { Bytemark::Load::mysql_status($_[0], 'Com_stmt_execute') }

sub count { my %n; $n{$_}++ for @_; return \%n }

# --- spread, weights 3:1 --------------------------------------------------------------------

$t->start_nginx(conf("bytemark_mysql_read spread;\n    bytemark_mysql_read_your_writes 4s;"),
                workers => 2);

my $r = ingest(1, 1, 'v1');
is $r->{status}, 200, 'ingest through the module: 200';
is $r->{headers}{'x-mysql-server'} && $name{ $r->{headers}{'x-mysql-server'} }, 'primary',
    '$bytemark_mysql_server of an ingest: the primary';
$t->sql("INSERT INTO bytemark_pass (user_id, pass_uuid, status, timestamp) VALUES (2, '"
        . uuid(2) . "', 'old', 1)");
$_->wait_replicated for $r1, $r2;
is_deeply [map { $_->sql("SELECT status FROM bytemark_pass WHERE pass_uuid = '" . uuid(1) . "'")->[0][0] }
           $r1, $r2], ['v1', 'v1'], 'the write through the module reached both replicas';
sleep 4.5;    # user 1's read-your-writes window is over

my %before = map { $_ => executed($_ eq 'primary' ? $t : $_ eq 'r1' ? $r1 : $r2) } qw(primary r1 r2);
my @who = map { read_user(100 + $_)->[0] } 1 .. 40;
my $n = count(@who);
ok !$n->{primary}, 'spread: no read goes to the primary' or diag explain $n;
ok(($n->{r1} // 0) >= 28 && ($n->{r1} // 0) <= 32 && ($n->{r2} // 0) >= 8 && ($n->{r2} // 0) <= 12
   && ($n->{r1} // 0) + ($n->{r2} // 0) == 40,
   "spread: weight=3 and weight=1 share the reads 3:1 (r1 $n->{r1}, r2 " . ($n->{r2} // 0) . ')')
    or diag explain $n;
is executed($t) - $before{primary}, 0, 'the primary executed no statement';
is executed($r1) - $before{r1} + executed($r2) - $before{r2}, 40,
    'the replicas executed one statement per read';

# lookups that wait together are batched into one query per server; each
# was given its server before it queued, so the batches follow the weights
%before = (primary => executed($t), r1 => executed($r1), r2 => executed($r2));
my @s = map { send_raw($port, "/t?user_id=" . (1000 + $_)) } 1 .. 64;
my @b = map { read_raw($_) } @s;
is scalar(grep { $_->{status} == 200 } @b), 64, 'a burst of 64 lookups: all 200';
$n = count(map { $name{ $_->{headers}{'x-mysql-server'} // '-' } // '?' } @b);
ok !$n->{primary} && ($n->{r1} // 0) > ($n->{r2} // 0) && ($n->{r2} // 0) > 0,
    "burst: from the replicas only, most from the heavier one (r1 " . ($n->{r1} // 0)
    . ", r2 " . ($n->{r2} // 0) . ')' or diag explain $n;
is executed($t) - $before{primary}, 0, 'burst: the primary executed no statement';
my $stmts = executed($r1) - $before{r1} + executed($r2) - $before{r2};
ok $stmts <= 64, "burst: $stmts statements on the replicas for 64 lookups"
    . ($stmts < 64 ? ' (batched)' : '');

# --- read-your-writes, with replicas that really lag ------------------------------------------

$_->pause_replication for $r1, $r2;
$r = ingest(1, 1, 'v2');
my $t_write = time;
is $r->{status}, 200, 'replication paused: ingest 200';
$t->sql("UPDATE bytemark_pass SET status = 'new' WHERE user_id = 2");
is_deeply [map { $_->sql("SELECT status FROM bytemark_pass WHERE pass_uuid = '" . uuid(1) . "'")->[0][0] }
           $t, $r1, $r2], ['v2', 'v1', 'v1'], 'the primary has the new state, the paused replicas the old one';

my @w = map { who(1) } 1 .. 8;
my @o = map { who(2) } 1 .. 8;
my $elapsed = time - $t_write;
SKIP: {
    skip sprintf('the machine is too slow: %.1f s for 16 reads, past the 4 s window', $elapsed), 4
        if $elapsed > 3.5;
    is_deeply \@w, [('primary v2') x 8], 'the writer reads its new pass, from the primary';
    is_deeply [sort keys %{ count(@o) }], ['r1 old', 'r2 old'],
        'another user reads from the lagging replicas (its change on the primary not there yet)';
    my $p = http_raw($port, '/users/1/passes/' . uuid(1));
    is(($p->{status} == 200 && $JSON->decode($p->{body})->{pass}{status}) . ' '
       . ($name{ $p->{headers}{'x-mysql-server'} // '' } // '?'), 'v2 primary',
       'a pass lookup of the writer: from the primary too');
    # the writes of the last seconds are in shared memory: a reload keeps them
    $t->reload_nginx;
    my $w = who(1);
    is $w, 'primary v2', 'after a reload within the window: still from the primary'
        if time - $t_write < 3.8;
    pass 'reload took too long to tell' if time - $t_write >= 3.8;
}

sleep 4.5 - (time - $t_write) if time - $t_write < 4.5;
my @after = map { who(1) } 1 .. 8;
is_deeply [sort keys %{ count(@after) }], ['r1 v1', 'r2 v1'],
    'after the window the writer reads the (still lagging) replicas again';

# --- window off: the writer reads the old state at once ---------------------------------------

$t->stop_nginx;
$t->start_nginx(conf("bytemark_mysql_read spread;\n    bytemark_mysql_read_your_writes off;"),
                workers => 2);
$r = ingest(1, 1, 'v3');
is $r->{status}, 200, 'read_your_writes off: ingest 200';
# 8 reads: each worker keeps its own round robin (3:1 gives r1 r1 r2 r1),
# so 4 reads split 2 and 2 between the workers never reach r2; of 8, one
# worker takes at least 4
@w = map { who(1) } 1 .. 8;
is_deeply [sort keys %{ count(@w) }], ['r1 v1', 'r2 v1'],
    'read_your_writes off: the writer reads its old pass from a lagging replica (what the window prevents)';

# --- a chosen replica down: the other one, then the primary ------------------------------------

$r1->stop_mysql;
@w = map { read_user(100 + $_)->[0] } 1 .. 12;
is_deeply \@w, [('r2') x 12], 'r1 down: every read from r2, none fails';
$r2->stop_mysql;
@w = map { who(2) } 1 .. 4;
is_deeply \@w, [('primary new') x 4], 'both replicas down: reads from the primary';
$r1->start_mysql;
$r2->start_mysql;
$_->resume_replication for $r1, $r2;
$_->wait_replicated for $r1, $r2;
ok wait_until(sub { read_user(7)->[0] =~ /^r[12]$/ }, 15), 'replicas back: reads spread to them again';
ok wait_until(sub { who(1) =~ /^r[12] v3$/ }, 5), 'replication resumed: the replicas have the last write';

# --- primary: every read from the primary; primary killed: from a replica ----------------------

$t->stop_nginx;
$t->start_nginx(conf("bytemark_mysql_read primary;", socket => 1), workers => 2);
@w = map { read_user(100 + $_)->[0] } 1 .. 12;
is_deeply \@w, [('primary (socket)') x 12],
    'primary: every read from the primary ($bytemark_mysql_server: unix:/path for socket=)';
is who(1), 'primary (socket) v3', 'primary: the writer too';
$t->stop_mysql(fast => 1);
@w = map { who(1) } 1 .. 6;
is_deeply \@w, [('r1 v3') x 6], 'primary killed: reads from the first replica, with the replicated data';
$r = ingest(1, 1, 'lost');
ok $r->{status} == 503 && !defined $r->{headers}{'x-mysql-server'},
    'primary killed: an ingest is 503, and no $bytemark_mysql_server (no server answered)'
    or diag "$r->{status} " . ($r->{headers}{'x-mysql-server'} // '');
$t->start_mysql;

$t->stop_nginx;
my $log = $t->error_log;
unlike $log, qr/\[(alert|emerg)\]|exited on signal/, 'no alert, no crash';
unlike $log, qr/s3cret-pw/, 'no password in the error log';

done_testing;
