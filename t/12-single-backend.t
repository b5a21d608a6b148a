#!/usr/bin/perl
# Either backend configured alone (SPEC 3.1 last paragraph), and
# bytemark_cache_fill off.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry body_both wait_until now_ms);

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

subtest 'MongoDB alone' => sub {
    my $t = Bytemark::Test->new(mongo => 1);
    $t->start_nginx(body_both(no_mysql => 1, loc => 'bytemark_cache_ttl 10s;',
        http => "server { listen 127.0.0.1:%%PORT2%%;
                          location = /t { bytemark_user_id \$arg_user_id; bytemark_cache_ttl 10s;
                                          bytemark_use_stale off; bytemark_tickets; } }"));
    $t->mongo_insert([
        cache_entry(1, passes => [{ pass_uuid => uuid(1), status => 'a' }]),
        cache_entry(2, ts => now_ms() - 60_000, passes => [{ pass_uuid => uuid(2), status => 'b' }]),
        cache_entry(3, passes => [{ pass_uuid => uuid(3), status => 'c' }],
                    extra => { bytemark_incomplete => JSON::PP::true }),
    ]);

    my $before = now_ms();
    my $r = $t->get('/t?user_id=9');
    my $j = $t->json($r);
    is_deeply [$r->{status}, src($r), $j->{passes}, $j->{passes4}], [200, 'mongo', [], []],
        'a miss is 200 with empty arrays from mongo';
    ok $j->{timestamp} >= $before && $j->{timestamp} <= now_ms(), 'timestamp of the lookup';

    $r = $t->get('/t?user_id=1');
    is_deeply [src($r), $t->json($r)->{passes}[0]{status}], ['mongo', 'a'], 'a fresh entry';
    $r = $t->get('/t?user_id=2');
    is_deeply [$r->{status}, src($r)], [200, 'stale'], 'a stale entry is served as stale';
    $r = HTTP::Tiny->new->get('http://127.0.0.1:' . $t->port2 . '/t?user_id=2');
    is $r->{status}, 503, '... unless bytemark_use_stale is off';
    $r = $t->get('/t?user_id=3');
    is $r->{status}, 503, 'an incomplete entry is never served';

    $r = $t->get('/users/1/passes/' . uuid(1));
    is_deeply [$r->{status}, src($r)], [200, 'mongo'], 'pass from the cache';
    $r = $t->get('/users/1/passes/' . uuid(9));
    is $r->{status}, 404, 'a pass not in the entry: 404';
    $r = $t->get('/users/9/passes/' . uuid(1));
    is $r->{status}, 404, 'no entry: 404';

    $t->stop_mongo;
    $r = $t->get('/t?user_id=1');
    is_deeply [$r->{status}, $r->{headers}{'retry-after'} ? 1 : 0], [503, 1], 'MongoDB down: 503 with Retry-After';
    $r = $t->get('/users/1/passes/' . uuid(1));
    is $r->{status}, 503, 'MongoDB down: pass 503';
    is $t->get('/static')->{status}, 200, 'the worker keeps serving';
};

subtest 'MySQL alone' => sub {
    my $t = Bytemark::Test->new(mysql => 1);
    $t->start_nginx(body_both(no_mongo => 1));
    add_pass($t, user => 5, uuid => uuid(5), status => 'x');

    my $r = $t->get('/t?user_id=5');
    is_deeply [$r->{status}, src($r), $t->json($r)->{passes}[0]{pass_uuid}], [200, 'mysql', uuid(5)],
        'tickets from MySQL';
    $r = $t->get('/users/5/passes/' . uuid(5));
    is_deeply [$r->{status}, src($r)], [200, 'mysql'], 'pass from MySQL';

    $t->stop_mysql;
    $r = $t->get('/t?user_id=5');
    is $r->{status}, 503, 'MySQL down: 503';
    $t->start_mysql;
    ok wait_until(sub { $t->get('/t?user_id=5')->{status} == 200 }, 10),
        'a broken connection is replaced once MySQL is back';
};

subtest 'bytemark_cache_fill off' => sub {
    my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
    $t->start_nginx(body_both(loc => 'bytemark_cache_fill off;'));
    add_pass($t, user => 6, uuid => uuid(6));
    my $r = $t->get('/t?user_id=6');
    is src($r), 'mysql', 'answered by MySQL';
    sleep 1;
    is $t->mongo_count({ user_id => 6 }), 0, 'no cache entry was written';
    is src($t->get('/t?user_id=6')), 'mysql', 'so the next lookup goes to MySQL again';
};

done_testing;
