#!/usr/bin/perl
# The event loop never waits on a database (SPEC 5, issue 3): with one
# worker, while tickets requests are held by a slow backend, a `return 200`
# location and a static file on that same worker answer at once. Measured
# while the slow requests are still pending (sent first on raw sockets,
# checked unanswered after the fast ones, read last). The backend is made
# slow in two ways: frozen with SIGSTOP (the thread is stuck in the driver),
# and behind a TCP relay that holds every chunk for a second (the driver
# makes progress, slowly).

use strict;
use warnings;

use Test::More;
use File::Path qw(make_path);
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry wait_until);
use Bytemark::Load qw(http_raw send_raw read_raw answered freeze);

my $FAST = 0.2;    # seconds a fast request may take (they take ~1 ms)

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
plan skip_all => 'needs a MongoDB the test can pause' unless $t->mongo_controllable;

# a static file big enough to be a real transfer
my $www = $t->dir . '/www';
make_path("$www/files");
my $file = join '', map { sprintf "line %06d of the static file\n", $_ } 1 .. 4000;
{ open my $fh, '>', "$www/files/big.txt" or die $!; print $fh $file; close $fh }

sub conf {
    my (%o) = @_;
    my $mongo = $o{mongo_uri} // '%%MONGO_URI%%';
    my $mysql = $o{mysql} // '%%MYSQL%%';
    return <<"EOF";
    bytemark_mongo_uri $mongo;
    bytemark_mongo_collection %%MONGO_COLL%%;
    bytemark_mysql $mysql;
    bytemark_mongo_timeout 3s;
    bytemark_mysql_timeout 3s;
    bytemark_cache_fill off;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location = /ok { return 200 "ok\\n"; }
        location /files/ { root %%DIR%%/www; }
    }
EOF
}

$t->start_nginx(conf(), workers => 1);
my $port = $t->nginx_port;
my ($worker) = $t->worker_pids;

# user 1: a fresh cache entry (and a row); user 2: a row, no cache entry
add_pass($t, user => 1, uuid => uuid(1), status => 'db');
add_pass($t, user => 2, uuid => uuid(2), status => 'db');
$t->mongo_insert(cache_entry(1, passes => [{ pass_uuid => uuid(1), status => 'cached' }]));

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

my $r = http_raw($port, '/t?user_id=1');
is_deeply [$r->{status}, src($r)], [200, 'mongo'], 'warm-up: user 1 from MongoDB';
$r = http_raw($port, '/t?user_id=2');
is_deeply [$r->{status}, src($r)], [200, 'mysql'], 'warm-up: user 2 from MySQL';

# Sends the slow requests, then times fast ones while they are pending;
# returns the pending sockets after checking none was answered meanwhile.
sub fast_while_pending {
    my ($what, @slow_paths) = @_;
    my @slow = map { send_raw($port, $_) or die "send: $!" } @slow_paths;
    sleep 0.3;    # the slow requests are now in the thread pool
    my (@times, @bad);
    for my $i (1 .. 10) {
        for my $path ('/ok', '/files/big.txt') {
            my $f = http_raw($port, $path, timeout => 10);
            my $want = $path eq '/ok' ? "ok\n" : $file;
            push @times, $f->{t1} - $f->{t0};
            push @bad, "$path: $f->{status} " . ($f->{error} // '')
                unless $f->{status} == 200 && $f->{body} eq $want;
        }
    }
    my $pending = grep { !answered($_) } @slow;
    my $max = (sort { $b <=> $a } @times)[0];
    is "@bad", '', "$what: the return-200 location and the static file answer correctly";
    ok $max < $FAST, sprintf("$what: 20 fast requests, the slowest took %.1f ms (< %d ms)",
                             $max * 1000, $FAST * 1000);
    is $pending, scalar(@slow), "$what: the " . scalar(@slow) . ' slow requests were still pending meanwhile';
    return @slow;
}

# --- MongoDB frozen (SIGSTOP) -------------------------------------------------------

freeze($t, 'mongo');
my @slow = fast_while_pending('MongoDB frozen', ('/t?user_id=1') x 2);
for my $s (@slow) {
    my $res = read_raw($s);
    my $took = $res->{t1} - $res->{t0};
    ok $res->{status} == 200 && src($res) eq 'mysql' && $took >= 2.5 && $took < 3 + 3,
        sprintf('MongoDB frozen: the slow request got MySQL\'s answer after the 3 s budget (%.2f s)', $took)
        or diag "$res->{status} " . src($res) . ' ' . ($res->{error} // '');
}
$t->resume_mongo;

# --- MySQL frozen, every pool thread stuck in it --------------------------------------

freeze($t, 'mysql');
# 6 calls for 4 threads: the pool is saturated, 2 calls wait in its queue
@slow = fast_while_pending('MySQL frozen, thread pool saturated', ('/t?user_id=2') x 6);
for my $s (@slow) {
    my $res = read_raw($s);
    my $took = $res->{t1} - $res->{t0};
    ok $res->{status} == 503 && $res->{body} =~ /"error":"unavailable"/ && $took >= 2.5 && $took < 3 + 3,
        sprintf('MySQL frozen: the slow request got 503 at the end of its budget (%.2f s)', $took)
        or diag "$res->{status} $res->{body} " . ($res->{error} // '');
}
$t->resume_mysql;
ok wait_until(sub { my $x = http_raw($port, '/t?user_id=2'); $x->{status} == 200 && src($x) eq 'mysql' }, 15),
    'MySQL answers again once resumed';

is_deeply [$t->worker_pids], [$worker], 'the same worker throughout: nothing crashed';

# --- slow, not frozen: a TCP relay that holds every chunk for 1 s ----------------------

my $mproxy = Bytemark::Load::Proxy->start($t, to => $t->mongo_port, delay => 1);
my $yproxy = Bytemark::Load::Proxy->start($t, to => $t->mysql_port, delay => 1);

# the driver's own timeouts set long, so that only the budget ends the call
$t->reload_nginx(conf(mongo_uri => 'mongodb://127.0.0.1:' . $mproxy->port
                        . '/?serverSelectionTimeoutMS=10000&connectTimeoutMS=10000&socketTimeoutMS=10000'));
@slow = fast_while_pending('MongoDB behind a 1 s relay', ('/t?user_id=1') x 2);
for my $s (@slow) {
    my $res = read_raw($s);
    my $took = $res->{t1} - $res->{t0};
    ok $res->{status} == 200 && src($res) eq 'mysql' && $took >= 2.5 && $took < 3 + 3,
        sprintf('slow MongoDB: MySQL answered after the MongoDB budget (%.2f s)', $took)
        or diag "$res->{status} " . src($res) . ' ' . ($res->{error} // '');
}

$t->reload_nginx(conf(mysql => $t->mysql_directive =~ s/port=\d+/'port=' . $yproxy->port/er));
@slow = fast_while_pending('MySQL behind a 1 s relay', ('/t?user_id=2') x 2);
for my $s (@slow) {
    my $res = read_raw($s);
    my $took = $res->{t1} - $res->{t0};
    ok $res->{status} == 503 && $took >= 2.5 && $took < 3 + 3,
        sprintf('slow MySQL: 503 at the end of the budget (%.2f s)', $took)
        or diag "$res->{status} $res->{body} " . ($res->{error} // '');
}
ok $mproxy->stop && $yproxy->stop, 'the relays ran throughout';

$t->stop_nginx;
my $log = $t->error_log;
unlike $log, qr/\[(alert|emerg)\]|exited on signal/, 'no alert, no crash';

done_testing;
