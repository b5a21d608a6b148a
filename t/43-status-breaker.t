#!/usr/bin/perl
# The circuit breakers on the status page: bytemark_breaker_open{backend}
# goes to 1 while MongoDB's breaker is open, lookups it skips count as
# bytemark_backend_errors_total{kind="breaker_open"}, and the gauge goes back
# to 0 once a probe found MongoDB again. The breaker's own behaviour is
# t/26-breaker.t.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry body_both wait_until);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$t->start_nginx(body_both(
    loc  => 'bytemark_mongo_timeout 300ms; bytemark_cache_fill off;',
    http => 'server { listen 127.0.0.1:%%PORT2%%; location = /status { bytemark_status; } }',
), workers => 1);

my $ua = HTTP::Tiny->new(timeout => 10);

sub status {
    my $r = $ua->get('http://127.0.0.1:' . $t->port2 . '/status');
    return $t->json($r);
}

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

add_pass($t, user => 1, uuid => uuid(1), status => 'db');
$t->mongo_insert(cache_entry(1, passes => [{ pass_uuid => uuid(1), status => 'cached' }]));
is src($t->get('/t?user_id=1')), 'mongo', 'MongoDB answers';

my $s = status();
is_deeply $s->{bytemark_breaker_open}, { mongo => 0, mysql => { 1 => 0 } },
    'JSON: one breaker for MongoDB, one per MySQL server, closed';

$t->pause_mongo;
my $n = 0;
ok wait_until(sub { $n++; $t->get('/t?user_id=1'); status()->{bytemark_breaker_open}{mongo} == 1 }, 15),
    "MongoDB frozen: the breaker opens ($n lookups)";

# the breaker stays open for a moment, then lets a probe through: look now
my $prom = $ua->get('http://127.0.0.1:' . $t->port2 . '/status?format=prometheus')->{content};
like $prom, qr/^# TYPE bytemark_breaker_open gauge$/m, 'Prometheus: the gauge';
like $prom, qr/^bytemark_breaker_open\{backend="mongo"\} 1$/m, 'Prometheus: MongoDB open';
like $prom, qr/^bytemark_breaker_open\{backend="mysql",server="1"\} 0$/m, 'Prometheus: MySQL server 1 closed';

# skipped calls: the breaker is open, or calls stuck in MongoDB hold threads
my $before = status()->{bytemark_backend_errors_total}{mongo}{breaker_open};
for (1 .. 3) {
    is src($t->get('/t?user_id=1')), 'mysql', "while open: MySQL answers ($_)";
}
ok wait_until(sub { status()->{bytemark_backend_errors_total}{mongo}{breaker_open} >= $before + 3 }, 5),
    'each skipped MongoDB call counts as a breaker_open error';

SKIP: {
    skip 'no promtool', 1 unless -x '/usr/bin/promtool';
    my $file = $t->dir . '/metrics.prom';
    open my $f, '>', $file or die $!;
    print $f $prom;
    close $f;
    my $out = `/usr/bin/promtool check metrics < $file 2>&1`;
    is $? >> 8, 0, 'promtool check metrics passes with the breakers' or diag $out;
}

$t->resume_mongo;
ok wait_until(sub { $t->get('/t?user_id=1'); status()->{bytemark_breaker_open}{mongo} == 0 }, 20),
    'MongoDB back: a probe closes the breaker, the gauge goes to 0';

$t->stop_nginx;
unlike $t->error_log, qr/\[(alert|crit|emerg)\]/, 'no alerts';

done_testing;
