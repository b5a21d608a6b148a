#!/usr/bin/perl
# bytemark_microcache: whole answers in a shared zone across workers; hit,
# expiry, the key, LRU eviction in a tiny zone, invalidation by ingest and
# purge across two workers, no stampede (N concurrent misses -> 1 backend
# query), errors and stale answers bypass it; $bytemark_cache_status.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry wait_until now_ms);

my $JSON = JSON::PP->new->utf8->canonical;

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
my $conf = '
    bytemark_mongo_uri %%MONGO_URI%%;
    bytemark_mongo_collection %%MONGO_COLL%%;
    bytemark_mysql %%MYSQL%%;
    bytemark_mysql_timeout 3s;
    bytemark_microcache zone=answers:1m ttl=2s;
    log_format mc "$request_uri $status $bytemark_cache_status $bytemark_source";
    access_log %%DIR%%/mc.log mc;
    add_header X-Cache-Status $bytemark_cache_status always;
    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        location = /t { bytemark_user_id $arg_user_id; bytemark_cache_fill off; bytemark_tickets; }
        location ~ ^/users/(\d+)/passes/(.+)$ { bytemark_user_id $1; bytemark_pass_uuid $2; bytemark_pass; }
        location ~ ^/users/(\d+)/passes$ { bytemark_user_id $1; bytemark_ingest; }
        location ~ ^/users/(\d+)/cache$ { bytemark_user_id $1; bytemark_purge; }
        location = /nocache { bytemark_user_id $arg_user_id; bytemark_microcache off; bytemark_tickets; }
        location = /tiny { bytemark_user_id $arg_user_id; bytemark_microcache zone=tiny:32k ttl=1m;
                           bytemark_cache_fill off; bytemark_tickets; }
        location = /status { bytemark_status; }
    }';
$t->start_nginx($conf, workers => 2);

sub get { my $r = $t->get($_[0], $_[1]); return ($r, ($r->{content} // '') =~ /^\{/ ? $t->json($r) : undef) }
sub cs  { $_[0]{headers}{'x-cache-status'} // '' }
sub src { $_[0]{headers}{'x-bytemark-source'} // '' }
sub status { $t->json($t->get('/status')) }
sub mysql_calls { status()->{bytemark_backend_duration_seconds}{mysql}{count} // 0 }

add_pass($t, user => $_, uuid => uuid($_), status => 'active', payload => { n => $_, pad => 'x' x 300 })
    for 1 .. 3;

# --- miss, hit ---------------------------------------------------------------------------

my ($r1, $j1) = get('/t?user_id=1');
is_deeply [$r1->{status}, cs($r1), src($r1)], [200, 'MISS', 'mysql'], 'first lookup: MISS, from MySQL';
my ($r2, $j2) = get('/t?user_id=1');
is_deeply [$r2->{status}, cs($r2), src($r2)], [200, 'HIT', 'mysql'],
    'second: HIT; X-Bytemark-Source stays the source of the stored answer';
is $r2->{content}, $r1->{content}, 'the same body';
is $r2->{headers}{etag}, $r1->{headers}{etag}, 'the same ETag';
my ($r3) = get('/t?user_id=1', { 'If-None-Match' => $r1->{headers}{etag} });
is_deeply [$r3->{status}, cs($r3)], [304, 'HIT'], 'a HIT honours If-None-Match';
is_deeply [map { $_->{headers}{'cache-control'} } $r1, $r2, $r3], [('private') x 3],
    'Cache-Control: private on the MISS, the HIT and the HIT that is a 304';
is cs((get('/t?user_id=1&foo=bar'))[0]), 'HIT', 'arguments that do not shape the answer do not split the key';
is cs((get('/t?user_id=1&status=active'))[0]), 'MISS', 'a status filter is part of the key';
is cs((get('/t?user_id=1&version=3'))[0]), 'MISS', 'so is the version filter';
my ($rp) = get('/users/1/passes/' . uuid(1));
is cs($rp), 'MISS', 'pass answers are cached too';
is cs((get('/users/1/passes/' . uc uuid(1)))[0]), 'HIT', '... under the lower-cased uuid';
is cs((get('/nocache?user_id=1'))[0]), '', 'bytemark_microcache off: no cache status';

my $s = status();
is $s->{bytemark_answers_total}{microcache}, 3, '200 HITs count as answers from the microcache (the 304 is not a 200)';
ok $s->{bytemark_microcache_events_total}{hit} >= 4, 'and as hit events';

# --- expiry -------------------------------------------------------------------------------

sleep 2.2;
my ($re) = get('/t?user_id=1');
is cs($re), 'EXPIRED', 'after ttl: EXPIRED';
# the refresh runs in the background: UPDATING until it has stored the answer
my @after;
ok wait_until(sub { push @after, cs((get('/t?user_id=1'))[0]); $after[-1] eq 'HIT' }, 5)
   && !grep({ $_ ne 'UPDATING' && $_ ne 'HIT' } @after),
   'then UPDATING while it is refreshed, and HIT again (' . join(' ', @after) . ')';
ok status()->{bytemark_microcache_events_total}{expired} >= 1, 'counted as expired, not miss';

# --- invalidation by ingest and purge, across two workers ------------------------------------

my %seen;
for (1 .. 10) { my ($r) = get('/t?user_id=2'); $seen{cs($r)}++ }
is_deeply [sort keys %seen], [qw(HIT MISS)], 'user 2 cached (both workers share the zone)';
is $seen{MISS}, 1, 'one MISS for ten requests over two workers';

my $ua = HTTP::Tiny->new;
my $ing = $ua->request('POST', $t->url('/users/2/passes'),
                       { content => $JSON->encode({ pass_uuid => uuid(2), status => 'changed' }) });
is $ing->{status}, 200, 'ingest a new state for user 2';
my ($ri, $ji) = get('/t?user_id=2');
is_deeply [cs($ri), $ji->{passes}[0]{status}], ['MISS', 'changed'], 'the ingest invalidated the cached answer: MISS with the new state';
for (1 .. 6) {
    my ($r, $j) = get('/t?user_id=2');
    is $j->{passes}[0]{status}, 'changed', "worker-independent: request $_ sees the new state";
}
ok status()->{bytemark_microcache_events_total}{invalidation} >= 1, 'counted as an invalidation';

is cs((get('/t?user_id=3'))[0]), 'MISS', 'user 3 cached';
is cs((get('/t?user_id=3'))[0]), 'HIT', '...';
is $ua->request('DELETE', $t->url('/users/3/cache'))->{status}, 204, 'purge user 3';
is cs((get('/t?user_id=3'))[0]), 'MISS', 'the purge dropped the cached answer';
is cs((get('/t?user_id=1'))[0]), 'HIT', 'other users keep theirs';

# --- no stampede: N concurrent misses -> 1 backend query ----------------------------------------

add_pass($t, user => 50, uuid => uuid(50), status => 'busy');
my $before = mysql_calls();
$t->pause_mysql;
my @socks = map {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->nginx_port, Timeout => 30) or die $!;
    print $s "GET /t?user_id=50 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    $s;
} 1 .. 20;
sleep 0.5;
$t->resume_mysql;
my (%st, $ok);
for my $s (@socks) {
    local $/;
    my $resp = <$s>;
    $ok++ if $resp =~ m{^HTTP/1.1 200} && $resp =~ /"status":"busy"/;
    $st{$1}++ if $resp =~ /^X-Cache-Status: (\w+)/mi;
}
is $ok, 20, '20 concurrent requests for a cold key: all 200 with the answer';
is mysql_calls() - $before, 1, 'and one backend query between them';
is $st{MISS}, 1, 'one MISS, the others waited for it';
is $st{HIT}, 19, '... and were HITs';

# --- errors and stale answers bypass the cache ---------------------------------------------------

# answers refused before any lookup are BYPASS too (SPEC 3.5), not empty
my $r405 = $t->http('POST', '/t?user_id=1');
is_deeply [$r405->{status}, cs($r405)], [405, 'BYPASS'], 'a 405 is BYPASS';
my ($r400) = get('/t?user_id=abc');
is_deeply [$r400->{status}, cs($r400)], [400, 'BYPASS'], 'a 400 is BYPASS';
my $r405n = $t->http('POST', '/nocache?user_id=1');
is_deeply [$r405n->{status}, cs($r405n)], [405, ''], 'micro-cache off for the location: empty';

$t->stop_mysql;
my ($rb) = get('/t?user_id=60');
is_deeply [$rb->{status}, cs($rb)], [503, 'BYPASS'], 'an error is BYPASS';
$t->mongo_insert(cache_entry(61, ts => now_ms() - 3_600_000, passes => [{ pass_uuid => uuid(61), status => 'old' }]));
$t->reload_nginx($conf =~ s/bytemark_mysql_timeout 3s;/bytemark_mysql_timeout 3s; bytemark_cache_ttl 1s;/r, workers => 2);
my ($rs) = get('/t?user_id=61');
is_deeply [$rs->{status}, src($rs), cs($rs)], [200, 'stale', 'BYPASS'], 'a stale answer is BYPASS';
$t->start_mysql;
add_pass($t, user => 60, uuid => uuid(60), status => 'back');
my ($ra) = get('/t?user_id=60');
is_deeply [$ra->{status}, cs($ra)], [200, 'MISS'], 'the error was not cached';

# --- LRU eviction in a tiny zone ------------------------------------------------------------------

add_pass($t, user => 100 + $_, uuid => uuid(100 + $_), status => 'a', payload => { pad => 'y' x 900 }) for 1 .. 60;
my $misses = 0;
for my $u (101 .. 160) { my ($r) = get("/tiny?user_id=$u"); $misses++ if cs($r) eq 'MISS' && $r->{status} == 200 }
is $misses, 60, '60 users into a 32k zone: all answered';
ok status()->{bytemark_microcache_events_total}{eviction} > 0, 'entries were evicted';
is cs((get('/tiny?user_id=160'))[0]), 'HIT', 'the most recent is kept';
is cs((get('/tiny?user_id=101'))[0]), 'MISS', 'the least recently used was evicted';
$t->reload_nginx;
is cs((get('/tiny?user_id=160'))[0]), 'HIT', 'a reload keeps the cached answers';

my @lines = grep { /^\/t\?user_id=1 / } split /\n/, Bytemark::Test::_slurp($t->dir . '/mc.log');
ok scalar(grep { / 200 HIT mysql$/ } @lines), 'the access log shows $bytemark_cache_status and the stored source';

$t->stop_nginx;

my ($rc, $out) = $t->nginx_test('bytemark_mysql host=localhost user=u database=d;
    server { listen 127.0.0.1:%%PORT%%; location / { bytemark_microcache zone=x:1m; } }');
ok $rc && $out =~ /"bytemark_microcache" directive needs "zone=<name>:<size>" and "ttl=<time>"/, 'ttl is required';
($rc, $out) = $t->nginx_test('bytemark_mysql host=localhost user=u database=d;
    server { listen 127.0.0.1:%%PORT%%; location / { bytemark_microcache zone=x:1k ttl=1s; } }');
ok $rc && $out =~ /zone "x" is too small/, 'a zone too small is refused';
($rc, $out) = $t->nginx_test('bytemark_mysql host=localhost user=u database=d;
    server { listen 127.0.0.1:%%PORT%%; location / { bytemark_microcache zone=x:1m ttl=soon; } }');
ok $rc && $out =~ /"bytemark_microcache" has an invalid parameter "ttl=soon"/, 'a bad ttl is refused';

done_testing;
