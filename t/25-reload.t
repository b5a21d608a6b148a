#!/usr/bin/perl
# Reload and shutdown (SPEC 5 "Pools", issue 3):
#   - nginx -s reload x10 while 3 clients run requests without a pause
#     (MongoDB hits, MySQL fallbacks, a static file, a return-200 location):
#     not one request fails (connection errors count as failures);
#   - afterwards, once the old workers are gone, the connections counted by
#     the servers are back within the live workers' pools: MariaDB
#     (PROCESSLIST of user bytemark, each one owned by a live worker;
#     Threads_connected) and MongoDB (serverStatus connections.current);
#     after a stop, exactly the baseline from before nginx started;
#   - nginx -s quit with a backend call in flight (MongoDB, then MySQL,
#     frozen): the request still gets its complete answer, and the workers
#     exit in bounded time, closing every connection.

use strict;
use warnings;

use Test::More;
use File::Path qw(make_path);
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry wait_until);
use Bytemark::Load qw(http_raw send_raw read_raw freeze mysql_conns mysql_conn_ids mysql_status
                      nginx_children tcp_owners summary);

my $JSON = JSON::PP->new->utf8;
my $POOL = 2;
my $WORKERS = 2;
my $THREADS = 4;

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
plan skip_all => 'needs a MongoDB the test can pause' unless $t->mongo_controllable;

my $www = $t->dir . '/www';
make_path("$www/files");
my $file = join '', map { sprintf "static line %05d\n", $_ } 1 .. 2000;
{ open my $fh, '>', "$www/files/s.txt" or die $!; print $fh $file; close $fh }

my $mysql = $t->mysql_directive(pool_size => $POOL);
my $conf = <<"EOF";
    bytemark_mongo_uri %%MONGO_URI%%;
    bytemark_mongo_collection %%MONGO_COLL%%;
    bytemark_mysql $mysql;
    bytemark_mongo_timeout 3s;
    bytemark_mysql_timeout 3s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t  { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location = /tm { bytemark_user_id \$arg_user_id; bytemark_cache_fill off; bytemark_tickets; }
        location = /ok { return 200 "ok\\n"; }
        location /files/ { root %%DIR%%/www; }
    }
EOF
my %start = (workers => $WORKERS, thread_pool => "threads=$THREADS max_queue=65536");

# users 1..10: fresh cache entries (MongoDB hits); 101..110: MySQL only
for my $u (1 .. 10, 101 .. 110) {
    add_pass($t, user => $u, uuid => uuid($u), status => 'db');
}
$t->mongo_insert([map { cache_entry($_, passes => [{ pass_uuid => uuid($_), status => 'cached' }]) } 1 .. 10]);

my @paths = ((map { "/t?user_id=$_" } 1 .. 10), (map { "/tm?user_id=$_" } 101 .. 110),
             '/files/s.txt', '/ok');

sub check {
    my ($path, $r) = @_;
    return "status $r->{status}" unless $r->{status} == 200;
    my $src = $r->{headers}{'x-bytemark-source'} // '';
    if ($path =~ /^\/t\?user_id=(\d+)/) {
        return "source $src" unless $src eq 'mongo';
        return 'wrong body' unless $JSON->decode($r->{body})->{passes}[0]{status} eq 'cached';
    } elsif ($path =~ /^\/tm\?user_id=(\d+)/) {
        return "source $src" unless $src eq 'mysql';
        return 'wrong body' unless $JSON->decode($r->{body})->{passes}[0]{status} eq 'db';
    } elsif ($path eq '/ok') {
        return 'wrong body' unless $r->{body} eq "ok\n";
    } else {
        return 'wrong file' unless $r->{body} eq $file;
    }
    return;
}

# --- baselines, before nginx runs ---------------------------------------------------------

my $threads0 = mysql_status($t, 'Threads_connected');    # our own client included
my $mongo0 = $t->mongo_connections;                        # mongo_cli's own included
is mysql_conns($t), 0, 'baseline: no bytemark connection on MariaDB';
note "baseline: Threads_connected $threads0, MongoDB connections $mongo0";

$t->start_nginx($conf, %start);
is_deeply [map { http_raw($t->nginx_port, $_)->{status} } @paths], [(200) x @paths], 'warm-up';
note 'warm: MongoDB connections ' . $t->mongo_connections . ', MySQL ' . mysql_conns($t);

# --- reload x10 under load ---------------------------------------------------------------------

my $load = Bytemark::Load->start($t, clients => 3, paths => \@paths, check => \&check, pause => 0.002,
                                 timeout => 20);
sleep 0.5;
my $r0 = time;
my @gen;
for my $i (1 .. 10) {
    push @gen, [$t->reload_nginx];
    sleep 0.3;
}
my $r1 = time;
sleep 0.5;
my $recs = $load->finish;
note sprintf '10 reloads in %.1f s; %s', $r1 - $r0, summary($recs);
my @during = grep { $_->{t0} >= $r0 && $_->{t0} < $r1 } @$recs;
ok @during >= 100, scalar(@during) . ' requests were sent during the reloads';
ok((grep { $_->{path} =~ /^\/t\?/ } @during) && (grep { $_->{path} =~ /^\/tm\?/ } @during)
   && (grep { $_->{path} =~ /^\/files/ } @during), 'of every kind');
my @failed = grep { $_->{status} != 200 || $_->{error} } @$recs;
is_deeply [map { sprintf '%s: %d %s %s', $_->{path}, $_->{status}, $_->{error} // '', $_->{body} // '' }
           @failed[0 .. ($#failed < 9 ? $#failed : 9)]], [],
    'reload x10 under load: zero failed requests (' . scalar(@failed) . ' failed)';

ok wait_until(sub { nginx_children($t) == $WORKERS }, 20), 'the old workers exit';
my @live = $t->worker_pids;
is_deeply [sort @live], [sort @{ $gen[-1] }], 'the workers are those of the last reload';

# MariaDB: the live workers' pools only
my ($ids, $owners);
ok wait_until(sub {
    $ids = mysql_conn_ids($t);
    $owners = tcp_owners([values %$ids], \@live);
    keys(%$ids) <= $POOL * $WORKERS && keys(%$owners) == keys(%$ids);
}, 10), 'MariaDB: ' . scalar(keys %$ids) . ' bytemark connections, at most pool_size x workers = '
        . $POOL * $WORKERS . ', each owned by a live worker: no connection of an old worker left'
    or diag explain { ids => $ids, owners => $owners };
my $threads1 = mysql_status($t, 'Threads_connected');
ok $threads1 <= $threads0 + $POOL * $WORKERS,
    "MariaDB Threads_connected $threads1 <= baseline $threads0 + pool_size x workers";

# MongoDB: a monitor connection plus at most one per pool thread, per live worker
my $mongo_max = $mongo0 + $WORKERS * (1 + $THREADS);
my $mongo1;
ok wait_until(sub { ($mongo1 = $t->mongo_connections) <= $mongo_max }, 10),
    "MongoDB connections $mongo1 <= baseline $mongo0 + workers x (monitor + threads) = $mongo_max";

$t->stop_nginx;
ok wait_until(sub { mysql_status($t, 'Threads_connected') == $threads0 }, 10),
    "nginx stopped: MariaDB Threads_connected back to its baseline $threads0";
is mysql_conns($t), 0, 'no bytemark connection left';
ok wait_until(sub { $t->mongo_connections == $mongo0 }, 10),
    "nginx stopped: MongoDB connections back to the baseline $mongo0";

# --- nginx -s quit with a call in flight ----------------------------------------------------------

sub quit_in_flight {
    my ($what, $pause, $resume, $path, $want_status, $want_source) = @_;
    # one worker: the warm-up opens the connection the request then uses
    $t->start_nginx($conf, %start, workers => 1);
    is http_raw($t->nginx_port, $path)->{status}, 200, "$what: warm-up";
    $pause->();
    my $s = send_raw($t->nginx_port, $path);
    sleep 0.5;
    my @workers = $t->worker_pids;
    ok !Bytemark::Load::answered($s), "$what: the request is in flight when nginx -s quit comes";
    my $q0 = time;
    my $clean = $t->stop_nginx(graceful => 1, timeout => 30);
    my $took = time - $q0;
    my $res = read_raw($s, timeout => 5);
    $resume->();
    ok $res->{status} == $want_status && !$res->{error}
       && ($res->{headers}{'x-bytemark-source'} // '') eq $want_source,
       "$what: nginx -s quit, the request in flight still got its complete answer ($want_status $want_source)"
        or diag "$res->{status} " . ($res->{error} // '') . " $res->{body}";
    ok $clean, "$what: nginx and its workers exited by themselves";
    ok $took < 15, sprintf("$what: within a bounded time (%.1f s)", $took);
    ok !(grep { kill 0, $_ } @workers), "$what: no worker left";
    ok wait_until(sub { mysql_conns($t) == 0 }, 10), "$what: no MariaDB connection left";
    ok wait_until(sub { $t->mongo_connections == $mongo0 }, 10), "$what: no MongoDB connection left";
}

quit_in_flight('MongoDB frozen', sub { freeze($t, 'mongo') }, sub { $t->resume_mongo },
               '/t?user_id=1', 200, 'mysql');
quit_in_flight('MySQL frozen', sub { freeze($t, 'mysql') }, sub { $t->resume_mysql },
               '/tm?user_id=101', 503, '');

my $log = $t->error_log;
unlike $log, qr/\[(alert|emerg)\]|exited on signal/, 'no alert (e.g. "open socket left"), no crash';

done_testing;
