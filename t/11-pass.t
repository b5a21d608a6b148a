#!/usr/bin/perl
# bytemark_pass (SPEC 3.2): a pass from the cache entry, from MySQL scoped to
# its user, 404 for another user's pass, uuid validation, ETag/304.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry body_both wait_until now_ms);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$t->start_nginx(body_both(loc => 'bytemark_cache_ttl 60s;'));

sub lookup {
    my ($user, $id, $h) = @_;
    my $r = $t->get("/users/$user/passes/$id", $h);
    my $j = ($r->{content} // '') =~ /^\{/ ? $t->json($r) : undef;
    return ($r, $j);
}

sub error_is {
    my ($res, $status, $code, $name) = @_;
    my $body = eval { $t->json($res) } || {};
    ok $res->{status} == $status && ($body->{error} // '') eq $code
       && join(',', sort keys %$body) eq 'error,message', $name
        or diag "got $res->{status} " . ($res->{content} // '');
}

my $p1 = add_pass($t, user => 100, uuid => uuid(1), status => 'active');
my $p4 = add_pass($t, user => 100, uuid => uuid(4), status => 'active', version => 4);
add_pass($t, user => 200, uuid => uuid(2), status => 'active');

# --- from MySQL (no cache entry) ---------------------------------------------------

my ($r, $j) = lookup(100, uuid(1));
is $r->{status}, 200, 'pass from MySQL: 200';
is $r->{headers}{'x-bytemark-source'}, 'mysql', 'source mysql';
is_deeply $j, { user_id => 100, version => 3, pass => $p1 }, 'body {user_id, version, pass}';
my $etag = $r->{headers}{etag};
like $etag, qr/^"[0-9a-f]{40}"$/, 'strong ETag';
is $r->{headers}{'cache-control'}, 'private', 'a pass is private (the default)';

($r, $j) = lookup(100, uc uuid(4));
is_deeply [$r->{status}, $j->{version}, $j->{pass}{pass_uuid}], [200, 4, uuid(4)],
    'upper-case uuid accepted and lower-cased; v4 pass has version 4';

sleep 0.5;
is $t->mongo_count({ user_id => 100 }), 0, 'a pass lookup never fills the cache';

($r, $j) = lookup(100, uuid(2));
error_is($r, 404, 'not_found', "another user's pass: 404");
ok !exists $r->{headers}{'cache-control'}, 'a 404 keeps no Cache-Control of its own';
($r, my $j404) = lookup(100, uuid(77));
is $r->{content}, $t->get('/users/100/passes/' . uuid(2))->{content},
    'a missing pass and another user\'s pass get the same answer';

# --- from the cache entry --------------------------------------------------------

$t->mongo_insert(cache_entry(100, passes => [{ %$p1, timestamp => $p1->{timestamp} }],
                                  passes4 => [{ %$p4, extra => 'kept' }]));
($r, $j) = lookup(100, uuid(1));
is $r->{headers}{'x-bytemark-source'}, 'mongo', 'pass from a fresh cache entry';
is_deeply $j->{pass}, $p1, 'same pass';
is $r->{headers}{etag}, $etag, 'same ETag as the MySQL answer';
is $r->{headers}{'cache-control'}, 'private', 'private from the cache too';
($r, $j) = lookup(100, uuid(4));
is_deeply [$r->{headers}{'x-bytemark-source'}, $j->{version}, $j->{pass}{extra}], ['mongo', 4, 'kept'],
    'a passes4 pass from the cache: version 4, unknown fields kept';

$r = $t->get('/users/100/passes/' . uuid(1), { 'If-None-Match' => $etag });
is_deeply [$r->{status}, $r->{headers}{'cache-control'}], [304, 'private'],
    'matching If-None-Match: 304, still private';
$r = $t->http('HEAD', '/users/100/passes/' . uuid(1));
is_deeply [$r->{status}, $r->{content} // ''], [200, ''], 'HEAD: 200 without body';

# a fresh entry without the pass: MySQL may know it
add_pass($t, user => 100, uuid => uuid(5), status => 'new');
($r, $j) = lookup(100, uuid(5));
is_deeply [$r->{status}, $r->{headers}{'x-bytemark-source'}, $j->{pass}{status}], [200, 'mysql', 'new'],
    'a pass missing from a fresh entry is looked up in MySQL';

# another user's pass is not found even when it is in the cache of its owner
$t->mongo_insert(cache_entry(200, passes => [{ pass_uuid => uuid(2), status => 'active' }]));
($r) = lookup(100, uuid(2));
error_is($r, 404, 'not_found', "another user's cached pass: 404");
($r) = lookup(200, uuid(2));
is $r->{headers}{'x-bytemark-source'}, 'mongo', 'its owner gets it from the cache';

# stale entries send the lookup to MySQL
$t->mongo_insert(cache_entry(300, ts => now_ms() - 600_000,
                             passes => [{ pass_uuid => uuid(3), status => 'stale-state' }]));
add_pass($t, user => 300, uuid => uuid(3), status => 'current');
($r, $j) = lookup(300, uuid(3));
is_deeply [$r->{headers}{'x-bytemark-source'}, $j->{pass}{status}], ['mysql', 'current'],
    'stale entry: MySQL answers';

# --- input errors ---------------------------------------------------------------------

for my $bad ('x', uuid(1) . '0', substr(uuid(1), 1), 'g' . substr(uuid(1), 1),
             '000000010000-4000-8000-0000000000011', '{"$gt":""}', "'%20OR%201=1%20--",
             '00000001_0000_4000_8000_000000000001', '%20' . substr(uuid(1), 1)) {
    ($r) = lookup(100, $bad);
    error_is($r, 400, 'invalid_pass_uuid', "invalid uuid '$bad'");
}
for my $bad ('0', '012', 'abc', '9007199254740992') {
    ($r) = lookup($bad, uuid(1));
    error_is($r, 400, 'invalid_user_id', "invalid user id '$bad' in the pass handler");
}
for my $m (qw(POST DELETE)) {
    $r = $t->http($m, '/users/100/passes/' . uuid(1));
    error_is($r, 405, 'method_not_allowed', "$m: 405");
    is $r->{headers}{allow}, 'GET, HEAD', "$m: Allow";
}

$t->stop_nginx;
unlike $t->error_log, qr/\[(alert|crit|emerg)\]/, 'no alerts in the error log';

done_testing;
