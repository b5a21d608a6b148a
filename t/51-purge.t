#!/usr/bin/perl
# bytemark_purge (SPEC 3.4): DELETE drops the user's cache entry, 204,
# idempotent; the next lookup is answered by MySQL; MongoDB down -> 503.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry body_both wait_until);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$t->start_nginx(body_both(http => "
    server {
        listen 127.0.0.1:%%PORT2%%;
        location ~ ^/users/([^/]*)/cache\$ { bytemark_user_id \$1; bytemark_purge; }
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location = /status { bytemark_status; }
    }"));
my $base = 'http://127.0.0.1:' . $t->port2;
my $ua = HTTP::Tiny->new(timeout => 30);

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

add_pass($t, user => 1, uuid => uuid(1), status => 'db');
$t->mongo_insert([cache_entry(1, passes => [{ pass_uuid => uuid(1), status => 'cached' }]),
                  cache_entry(2, passes => [])]);
is src($ua->get("$base/t?user_id=1")), 'mongo', 'before: a cache hit';

my $r = $ua->request('DELETE', "$base/users/1/cache");
is_deeply [$r->{status}, $r->{content} // ''], [204, ''], 'purge: 204 without a body';
is $t->mongo_count({ user_id => 1 }), 0, 'the entry is gone';
is $t->mongo_count({ user_id => 2 }), 1, 'other users keep theirs';
$r = $ua->get("$base/t?user_id=1");
is_deeply [src($r), $t->json($r)->{passes}[0]{status}], ['mysql', 'db'], 'purge then lookup: mysql';

ok wait_until(sub { $t->mongo_count({ user_id => 1 }) }), 'the lookup filled the cache again';
is $ua->request('DELETE', "$base/users/1/cache")->{status}, 204, 'purge again: 204';
is $ua->request('DELETE', "$base/users/1/cache")->{status}, 204, 'purge of nothing: 204 (idempotent)';

for my $m (qw(GET POST PUT)) {
    $r = $ua->request($m, "$base/users/1/cache");
    ok $r->{status} == 405 && ($r->{headers}{allow} // '') eq 'DELETE', "$m: 405 with Allow: DELETE";
}
$r = $ua->request('DELETE', "$base/users/01/cache");
ok $r->{status} == 400 && $r->{content} =~ /invalid_user_id/, 'invalid user id: 400';

$t->stop_mongo;
$r = $ua->request('DELETE', "$base/users/2/cache");
my $j = eval { $t->json($r) } || {};
is_deeply [$r->{status}, $j->{error}, $r->{headers}{'retry-after'} ? 1 : 0], [503, 'unavailable', 1],
    'MongoDB down: 503 unavailable with Retry-After';
like $t->error_log, qr/mongo purge for user 2 failed/, 'the failure is logged';
my $s = $t->json($ua->get("$base/status"));
is $s->{bytemark_cache_write_failures_total}{purge}, 1, 'and counted in bytemark_cache_write_failures_total{op="purge"}';

done_testing;
