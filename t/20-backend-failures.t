#!/usr/bin/perl
# Backends failing for real (SPEC 3.1 step 2-4, 3.6): MongoDB stopped, MySQL
# stopped, both stopped; stale answers, incomplete entries, 503 with
# Retry-After, and a worker that keeps serving throughout.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry body_both wait_until now_ms);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$t->start_nginx(body_both(
    loc  => 'bytemark_cache_ttl 10s; bytemark_mongo_timeout 500ms; bytemark_mysql_timeout 1s;',
    http => "server {
                 listen 127.0.0.1:%%PORT2%%;
                 location = /t { bytemark_user_id \$arg_user_id; bytemark_use_stale off;
                                 bytemark_cache_ttl 10s; bytemark_tickets; }
                 location ~ ^/p/(\\d+)/(.+)\$ { bytemark_user_id \$1; bytemark_pass_uuid \$2;
                                                bytemark_use_stale off; bytemark_cache_ttl 10s;
                                                bytemark_pass; }
             }",
));

my $p2 = 'http://127.0.0.1:' . $t->port2;

sub tickets {
    my ($u, $base) = @_;
    my $r = $base ? HTTP::Tiny->new(timeout => 30)->get("$base/t?user_id=$u")
                  : $t->get("/t?user_id=$u");
    my $j = ($r->{content} // '') =~ /^\{/ ? $t->json($r) : undef;
    return ($r, $j);
}

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

sub unavailable {
    my ($r, $name) = @_;
    my $j = eval { $t->json($r) } || {};
    ok $r->{status} == 503 && ($j->{error} // '') eq 'unavailable'
       && ($r->{headers}{'retry-after'} // '') =~ /^\d+$/
       && join(',', sort keys %$j) eq 'error,message', $name
        or diag "got $r->{status} " . ($r->{content} // '');
}

add_pass($t, user => 1, uuid => uuid(1), status => 'db');        # fresh in cache
add_pass($t, user => 2, uuid => uuid(2), status => 'db');        # stale in cache
add_pass($t, user => 3, uuid => uuid(3), status => 'db');        # not in cache
add_pass($t, user => 4, uuid => uuid(4), status => 'db');        # incomplete in cache

sub seed_cache {
    $t->mongo_index_unique('user_id');
    # a real server keeps its data across a restart, the stand-in does not
    $t->mongo_delete({ user_id => { '$in' => [1, 2, 4] } });
    $t->mongo_insert([
        cache_entry(1, passes => [{ pass_uuid => uuid(1), status => 'cached' }]),
        cache_entry(2, ts => now_ms() - 3_600_000, passes => [{ pass_uuid => uuid(2), status => 'old' }]),
        cache_entry(4, passes => [{ pass_uuid => uuid(4), status => 'ingested' }],
                    extra => { bytemark_incomplete => JSON::PP::true }),
    ]);
}
seed_cache();

# --- MongoDB stopped -----------------------------------------------------------------

$t->stop_mongo;
for my $u (1, 2, 3) {
    my $t0 = time;
    my ($r, $j) = tickets($u);
    ok $r->{status} == 200 && src($r) eq 'mysql' && $j->{passes}[0]{status} eq 'db',
        "MongoDB down: user $u answered from MySQL";
    ok time - $t0 < 5, 'within the budgets (' . sprintf('%.2f', time - $t0) . 's)';
}
my $r = $t->get('/users/3/passes/' . uuid(3));
is_deeply [$r->{status}, src($r)], [200, 'mysql'], 'MongoDB down: pass lookup from MySQL';
like $t->error_log, qr/bytemark: mongo find for user \d+ failed/, 'the MongoDB failure is logged with its cause';

$t->start_mongo;
seed_cache();

# --- MySQL stopped -------------------------------------------------------------------

$t->stop_mysql;
my ($rr, $j) = tickets(1);
ok $rr->{status} == 200 && src($rr) eq 'mongo' && $j->{passes}[0]{status} eq 'cached',
    'MySQL down: a fresh entry is still served from MongoDB';
($rr, $j) = tickets(2);
ok $rr->{status} == 200 && src($rr) eq 'stale' && $j->{passes}[0]{status} eq 'old',
    'MySQL down: a stale entry is served as stale';
my ($d) = $t->mongo_find({ user_id => 2 });
is $t->plain($d->{timestamp}), $j->{timestamp}, 'a stale answer carries the entry\'s own timestamp';
($rr) = tickets(2, $p2);
unavailable($rr, 'MySQL down, bytemark_use_stale off: 503');
($rr) = tickets(3);
unavailable($rr, 'MySQL down, no entry: 503 with Retry-After');
($rr) = tickets(4);
unavailable($rr, 'MySQL down, incomplete entry: 503, never served, not even as stale');

$r = $t->get('/users/2/passes/' . uuid(2));
is_deeply [$r->{status}, src($r)], [200, 'stale'], 'MySQL down: a pass from a stale entry is stale';
$r = HTTP::Tiny->new->get("$p2/p/2/" . uuid(2));
unavailable($r, 'MySQL down, pass from stale entry with use_stale off: 503');
$r = $t->get('/users/2/passes/' . uuid(9));
unavailable($r, 'MySQL down, stale entry without the pass: 503 (it may exist)');
$r = $t->get('/users/1/passes/' . uuid(9));
unavailable($r, 'MySQL down, fresh entry without the pass: 503');
$r = $t->get('/users/4/passes/' . uuid(4));
unavailable($r, 'MySQL down, pass in an incomplete entry: 503');
like $t->error_log, qr/bytemark: mysql (tickets|pass) query for user \d+ failed/, 'the MySQL failure is logged';

# --- both stopped -------------------------------------------------------------------

$t->stop_mongo;
for my $u (1, 2, 3) {
    ($rr) = tickets($u);
    unavailable($rr, "both down: user $u gets 503");
}
$r = $t->get('/static');
is_deeply [$r->{status}, $r->{content}], [200, "static ok\n"], 'the worker keeps serving other locations';

# --- both back -----------------------------------------------------------------------

$t->start_mysql;
$t->start_mongo;
ok wait_until(sub { ($rr, $j) = tickets(3); $rr->{status} == 200 }, 20),
    'service resumes when the backends are back';
is_deeply [src($rr), $j->{passes}[0]{status}], ['mysql', 'db'], 'a miss is answered by MySQL again';
ok wait_until(sub { ($rr) = tickets(3); src($rr) eq 'mongo' }, 10), 'and then by MongoDB again';

$t->stop_nginx;
my $log = $t->error_log;
unlike $log, qr/\[(alert|crit|emerg)\]/, 'no alerts: no worker crashed';
unlike $log, qr/s3cret-pw/, 'the MySQL password is not in the error log';

done_testing;
