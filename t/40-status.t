#!/usr/bin/perl
# bytemark_status (SPEC 3.5) and the log variables (SPEC 4) with two workers:
# counters move by exactly the expected amounts for a known sequence of
# requests, whichever worker served them; histograms are cumulative and
# their _count is the number of backend calls; gauges come back to rest;
# the Prometheus output passes `promtool check metrics`; an access log
# written with the variables shows mongo, mysql and stale answers; counters
# survive a reload.

use strict;
use warnings;

use Test::More;
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry wait_until now_ms);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);

# reuseport: each worker has its own listening socket and the kernel spreads
# connections over them, so both workers serve part of the sequence
my $body = <<'EOF';
bytemark_mongo_uri %%MONGO_URI%%;
bytemark_mongo_collection %%MONGO_COLL%%;
bytemark_mysql %%MYSQL%%;

log_format bytemark 'pid=$pid $status src=$bytemark_source user=$bytemark_user_id '
                    'mongo=$bytemark_mongo_time mysql=$bytemark_mysql_time '
                    'cache=$bytemark_cache_status "$request"';

map $bytemark_source $bytemark_stale {
    stale    1;
    default  0;
}

server {
    listen 127.0.0.1:%%PORT%% reuseport;
    access_log %%DIR%%/bytemark.log bytemark;
    access_log %%DIR%%/stale.log bytemark if=$bytemark_stale;

    bytemark_cache_ttl 60s;
    bytemark_mongo_timeout 300ms;

    location = /t {
        bytemark_user_id $arg_user_id;
        bytemark_tickets;
        add_header X-Mongo-Time $bytemark_mongo_time;
    }

    location ~ ^/users/([^/]*)/passes/([^/]*)$ {
        bytemark_user_id $1;
        bytemark_pass_uuid $2;
        bytemark_pass;
    }

    location = /status {
        allow 127.0.0.1;
        deny all;
        bytemark_status;
    }

    location = /static {
        return 200 "static ok\n";
    }
}
EOF
$t->start_nginx($body, workers => 2);

my @FAMILIES = (
    [bytemark_requests_total              => 'counter'],
    [bytemark_answers_total               => 'counter'],
    [bytemark_backend_errors_total        => 'counter'],
    [bytemark_backend_duration_seconds    => 'histogram'],
    [bytemark_mongo_batch_size            => 'histogram'],
    [bytemark_pool_connections            => 'gauge'],
    [bytemark_thread_pool_queue           => 'gauge'],
    [bytemark_microcache_events_total     => 'counter'],
    [bytemark_cache_cleanup_runs_total    => 'counter'],
    [bytemark_cache_cleanup_deleted_total => 'counter'],
    [bytemark_cache_write_failures_total  => 'counter'],
    [bytemark_build_info                  => 'gauge'],
);
my @LE = qw(0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 +Inf);

my $n_status = 0;    # status GETs sent: each counts once it is logged

sub status {
    $n_status++;
    my $r = $t->get('/status');
    die "status: $r->{status} $r->{content}" unless $r->{status} == 200;
    return $t->json($r);
}

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

# SIGSTOP takes effect a moment after kill() returns: wait until every
# thread of the process is stopped, or a request may still be answered
sub stopped {
    my ($pid) = @_;
    wait_until(sub {
        my @st = map { my $s = do { local (@ARGV, $/) = $_; <> } // ''; $s =~ /\) (\S)/ ? $1 : '?' }
                 glob("/proc/$pid/task/*/stat");
        @st && !grep { $_ ne 'T' && $_ ne 't' } @st;
    }, 5) or diag "process $pid did not stop";
}

sub bytemark_log {
    my ($name) = @_;
    $name //= 'bytemark.log';
    open my $f, '<', $t->dir . "/$name" or die "$name: $!";
    local $/;
    return split /\n/, <$f>;
}

# the counters of a status document, flattened: "answers.mongo" => 3, ...
sub flat {
    my ($s) = @_;
    my %f;
    my $walk;
    $walk = sub {
        my ($prefix, $v) = @_;
        if (ref $v eq 'HASH') { $walk->($prefix eq '' ? $_ : "$prefix.$_", $v->{$_}) for keys %$v }
        else                  { $f{$prefix} = $v }
    };
    $walk->('', $s);
    return { map { (my $k = $_) =~ s/^bytemark_//; ($k => $f{$_}) } keys %f };
}

# counter deltas between two documents, gauges and histogram sums left out
sub delta {
    my ($a, $b) = map { flat($_) } @_;
    my %d;
    for my $k (keys %$b) {
        next if $k =~ /^(pool_connections|thread_pool_queue|breaker_open|notes|build_info)|\.sum$/;
        my $v = $b->{$k} - ($a->{$k} // 0);
        $d{$k} = $v if $v;
    }
    return \%d;
}

# --- data --------------------------------------------------------------------------

add_pass($t, user => 1, uuid => uuid(1), status => 'db');
add_pass($t, user => 2, uuid => uuid(2), status => 'db');
add_pass($t, user => 3, uuid => uuid(3), status => 'db');
$t->mongo_insert([
    cache_entry(1, passes => [{ pass_uuid => uuid(1), status => 'cached' }]),
    cache_entry(2, ts => now_ms() - 3_600_000, passes => [{ pass_uuid => uuid(2), status => 'old' }]),
]);

# --- the shape, before anything happened ------------------------------------------

my $s0 = status();
is_deeply [sort keys %$s0], [sort 'bytemark_breaker_open', 'bytemark_notes', 'bytemark_notes_zone_bytes',
                               map { $_->[0] } @FAMILIES],
    'JSON: one key per metric of the SPEC table, the circuit breakers and the notes';
is_deeply $s0->{bytemark_breaker_open}, { mongo => 0, mysql => { 1 => 0 } }, 'JSON: breakers closed';
is_deeply $s0->{bytemark_answers_total}, { mongo => 0, mysql => 0, stale => 0, microcache => 0 },
    'JSON: answers by source, all zero';
is_deeply [sort keys %{ $s0->{bytemark_backend_duration_seconds}{mongo} }], [qw(buckets count sum)],
    'JSON: a histogram has buckets, sum and count';
is_deeply [sort { $a <=> $b } map { $_ eq '+Inf' ? 1e9 : $_ } keys %{ $s0->{bytemark_backend_duration_seconds}{mysql}{buckets} }],
          [map { $_ eq '+Inf' ? 1e9 : $_ } @LE], 'JSON: the bucket bounds';
is_deeply $s0->{bytemark_cache_write_failures_total}, { fill => 0, ingest => 0, purge => 0 },
    'JSON: cache write failures by op';
is $s0->{bytemark_thread_pool_queue}, 0, 'JSON: thread pool queue is a number';

my $r = $t->get('/status');
is $r->{headers}{'content-type'}, 'application/json', 'JSON content type';
is $r->{headers}{'cache-control'}, 'no-store', 'not cacheable';
$n_status++;

# --- a known sequence, each request on a connection of its own --------------------

sleep 0.2;    # the status GETs above are logged
my $base = status();
my $n_base = $n_status;

for (1 .. 10) {
    $r = $t->get('/t?user_id=1');
    die "tickets 1: $r->{status}" unless $r->{status} == 200 && src($r) eq 'mongo';
}
my $etag = $r->{headers}{etag};
for (1 .. 4) {
    $r = $t->get('/users/1/passes/' . uuid(1));
    die "pass 1: $r->{status}" unless $r->{status} == 200 && src($r) eq 'mongo';
}
is $t->get('/users/1/passes/' . uuid(99))->{status}, 404, 'a pass that is not there: 404';
$r = $t->get('/t?user_id=3');
is_deeply [$r->{status}, src($r)], [200, 'mysql'], 'a miss: answered by MySQL (and filled)';
like $r->{headers}{'x-mongo-time'}, qr/^\d+\.\d{3}$/, 'add_header: $bytemark_mongo_time';
is $t->get('/t?user_id=x')->{status}, 400, 'a bad user id: 400' for 1 .. 3;
is $t->get('/t?user_id=1&version=7')->{status}, 400, 'a bad argument: 400';
is $t->http('POST', '/t?user_id=1', undef, '{}')->{status}, 405, 'POST on tickets: 405' for 1 .. 2;
is $t->get('/t?user_id=1', { 'If-None-Match' => $etag })->{status}, 304, 'If-None-Match: 304';
$r = $t->http('POST', '/status', undef, 'x');
is $r->{status}, 405, 'POST on status: 405';
is $r->{headers}{allow}, 'GET, HEAD', 'with Allow: GET, HEAD';
is_deeply [sort keys %{ $t->json($r) }], [qw(error message)], 'and the SPEC error body';

my %want = (
    'requests_total.tickets.200' => 11,
    'requests_total.tickets.400' => 4,
    'requests_total.tickets.405' => 2,
    'requests_total.tickets.304' => 1,
    'requests_total.pass.200'    => 4,
    'requests_total.pass.404'    => 1,
    'requests_total.status.405'  => 1,
    'answers_total.mongo'        => 14,
    'answers_total.mysql'        => 1,
    # finds: 10 tickets + 4 pass + 1 pass miss + 1 tickets miss + 1 304;
    # plus the fill after the MySQL answer
    'backend_duration_seconds.mongo.count' => 18,
    'backend_duration_seconds.mysql.count' => 2,
);
$want{"backend_duration_seconds.$_->[0].buckets.+Inf"} = $_->[1] for [mongo => 18], [mysql => 2];
# one request at a time: each find is a task of its own, of size 1
$want{"mongo_batch_size.$_"} = 17 for 'count', 'buckets.+Inf';

# the log phase (and the fill) finish just after the client has its answer
my ($d, $now);
wait_until(sub {
    $now = status();
    $d = delta($base, $now);
    delete $d->{'requests_total.status.200'};
    my %bucket = map { $_ => $d->{$_} } grep { /buckets\.(?!\+Inf)/ } keys %$d;
    delete @$d{ keys %bucket };
    join(',', map { "$_=$d->{$_}" } sort keys %$d) eq join(',', map { "$_=$want{$_}" } sort keys %want);
}, 10);
is_deeply $d, \%want, 'every counter moved by exactly the expected amount, nothing else moved';

sleep 0.2;    # the last status GET is logged
my $n_before = $n_status;
$now = status();
is $now->{bytemark_requests_total}{status}{200} - $base->{bytemark_requests_total}{status}{200},
   $n_before - $n_base + 1, 'status GETs count as handler="status" once logged'
   or diag "status GETs: $n_before";

my %pids = map { /^pid=(\d+) / ? ($1 => 1) : () } bytemark_log();
is scalar(keys %pids), 2, 'both workers served part of the sequence';

# --- histograms --------------------------------------------------------------------

for my $b (qw(mongo mysql)) {
    my $h = $now->{bytemark_backend_duration_seconds}{$b};
    my @n = map { $h->{buckets}{$_} } @LE;
    ok !(grep { $n[$_] < $n[$_ - 1] } 1 .. $#n), "$b: buckets are cumulative (@n)";
    is $n[-1], $h->{count}, "$b: +Inf bucket == count";
    ok $h->{sum} > 0 && $h->{sum} < $h->{count} * 5, "$b: sum in seconds ($h->{sum})";
}

# --- gauges at rest ----------------------------------------------------------------

my $p = $now->{bytemark_pool_connections};
is $now->{bytemark_thread_pool_queue}, 0, 'thread pool queue: 0 at rest';
is_deeply [$p->{mongo}{busy}, $p->{mysql}{busy}], [0, 0], 'no connection busy at rest';
ok $p->{mysql}{idle} >= 1 && $p->{mysql}{idle} <= 2, "MySQL: one idle connection per worker that used it ($p->{mysql}{idle})";
ok $p->{mongo}{idle} >= 1 && $p->{mongo}{idle} <= 4, "MongoDB: idle clients ($p->{mongo}{idle})";

# --- Prometheus --------------------------------------------------------------------

$r = $t->get('/status?format=prometheus');
is $r->{status}, 200, 'Prometheus: 200';
is $r->{headers}{'content-type'}, 'text/plain; version=0.0.4; charset=utf-8',
    'Prometheus: text/plain; version=0.0.4; charset=utf-8';
is $r->{headers}{'cache-control'}, 'no-store', 'the status page stays no-store';
my $prom = $r->{content};
for my $f (@FAMILIES) {
    like $prom, qr/^# HELP $f->[0] \S.*\n# TYPE $f->[0] $f->[1]$/m, "Prometheus: HELP and TYPE of $f->[0]";
}
my %series = map { /^(\S+) (\S+)$/ ? ($1 => $2) : () } grep { !/^#/ } split /\n/, $prom;
is $series{'bytemark_answers_total{source="mongo"}'}, $now->{bytemark_answers_total}{mongo},
    'Prometheus and JSON give the same numbers';
is $series{'bytemark_requests_total{handler="tickets",status="400"}'}, 4 + ($base->{bytemark_requests_total}{tickets}{400} // 0),
    'requests_total{handler,status}';
is $series{'bytemark_backend_duration_seconds_count{backend="mongo"}'},
   $series{'bytemark_backend_duration_seconds_bucket{backend="mongo",le="+Inf"}'}, 'Prometheus: _count == +Inf bucket';
my @le = map { $series{qq(bytemark_backend_duration_seconds_bucket{backend="mysql",le="$_"})} } @LE;
ok !(grep { !defined || $le[$_] < $le[$_ - 1] } 1 .. $#le), 'Prometheus: cumulative buckets';
is $series{'bytemark_thread_pool_queue'}, 0, 'an unlabelled gauge';

SKIP: {
    my $promtool = -x '/usr/bin/promtool' ? '/usr/bin/promtool' : undef;
    ok $promtool, 'promtool is installed (scripts/deps.sh: prometheus)' or skip 'no promtool', 1;
    my $file = $t->dir . '/metrics.prom';
    open my $f, '>', $file or die $!;
    print $f $prom;
    close $f;
    my $out = `$promtool check metrics < $file 2>&1`;
    is $? >> 8, 0, 'promtool check metrics passes' or diag $out;
}

$r = $t->http('HEAD', '/status?format=prometheus');
is_deeply [$r->{status}, $r->{content} // ''], [200, ''], 'HEAD: 200, no body';
$r = $t->get('/status?format=xml');
is_deeply [$r->{status}, $t->json($r)->{error}], [400, 'invalid_argument'], 'an unknown format: 400';

# --- the variables, and degraded answers -------------------------------------------

$base = status();

# MongoDB frozen: its budget is spent, MySQL answers; the thread is still in
# the driver, holding its client
$t->pause_mongo;
stopped($t->mongo_pid);
$r = $t->get('/t?user_id=1');
is_deeply [$r->{status}, src($r)], [200, 'mysql'], 'MongoDB frozen: answered by MySQL'
    or diag $r->{content};
$now = status();
ok $now->{bytemark_thread_pool_queue} >= 1, 'the abandoned call is still in the thread pool';
ok $now->{bytemark_pool_connections}{mongo}{busy} >= 1, 'and holds a MongoDB client';
$t->resume_mongo;
ok wait_until(sub { $now = status(); $now->{bytemark_thread_pool_queue} == 0 }, 10),
    'the call completes once MongoDB is back';

# MySQL down: the stale entry of user 2 answers
$t->stop_mysql;
$r = $t->get('/t?user_id=2');
is_deeply [$r->{status}, src($r)], [200, 'stale'], 'MySQL down: a stale answer';

ok wait_until(sub {
    $now = status();
    $d = delta($base, $now);
    ($d->{'answers_total.stale'} // 0) == 1;
}, 5), 'the stale answer is counted';
is_deeply { map { $_ => $d->{$_} } grep { /^(answers|backend_errors)/ } keys %$d },
          { 'answers_total.mysql' => 1, 'answers_total.stale' => 1,
            'backend_errors_total.mongo.timeout' => 1, 'backend_errors_total.mysql.connect' => 1 },
    'one MongoDB timeout, one MySQL connect error; the late end of the timed-out call is not a second error';

my @log = bytemark_log();
my ($hit)   = grep { m{"GET /t\?user_id=1 } && /src=mongo/ } @log;
my ($fall)  = grep { m{"GET /t\?user_id=3 } } @log;
my ($stale) = grep { m{"GET /t\?user_id=2 } } @log;
like $hit,   qr/^pid=\d+ 200 src=mongo user=1 mongo=\d+\.\d{3} mysql=- cache=- /, 'access log: a mongo hit';
like $fall,  qr/^pid=\d+ 200 src=mysql user=3 mongo=\d+\.\d{3} mysql=\d+\.\d{3} cache=- /, 'access log: a mysql fallback';
like $stale, qr/^pid=\d+ 200 src=stale user=2 mongo=\d+\.\d{3} mysql=\d+\.\d{3} cache=- /, 'access log: a stale answer';
my ($bad) = grep { m{"GET /t\?user_id=x } } @log;
like $bad, qr/ 400 src=- user=- mongo=- mysql=- /, 'access log: nothing known of a rejected request';
my ($st) = grep { m{"GET /status } } @log;
like $st, qr/ 200 src=- user=- /, 'access log: the status page has no source';
my @stale = bytemark_log('stale.log');
ok @stale == 1 && $stale[0] =~ /src=stale user=2 /, 'map: a log of the stale answers only'
    or diag explain \@stale;

# --- reload: the zone is reused, the counters go on --------------------------------

$t->start_mysql;
my $before = status();
$t->reload_nginx;
my $after = status();
is $after->{bytemark_answers_total}{mongo}, $before->{bytemark_answers_total}{mongo},
    'counters survive a reload';
is $after->{bytemark_backend_duration_seconds}{mongo}{count},
   $before->{bytemark_backend_duration_seconds}{mongo}{count}, 'histograms too';
$r = $t->get('/t?user_id=1');
ok wait_until(sub { status()->{bytemark_answers_total}{mongo} == $before->{bytemark_answers_total}{mongo} + 1 }, 5),
    'and count on after it';
# the new workers have not asked MySQL yet: what the old ones held is gone
ok wait_until(sub {
    my $p = status()->{bytemark_pool_connections};
    $p->{mysql}{idle} + $p->{mysql}{busy} + $p->{mongo}{busy} == 0 && $p->{mongo}{idle} <= 2;
}, 10), 'the gauges of the old workers left with them';

$t->stop_nginx;
unlike $t->error_log, qr/\[(alert|crit|emerg)\]/, 'no alerts';

done_testing;
