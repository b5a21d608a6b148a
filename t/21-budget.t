#!/usr/bin/perl
# Time budgets are enforced from the event loop (SPEC 5): with a backend
# frozen (SIGSTOP), the request is answered within its budget while the
# thread is still stuck in the driver; the abandoned call finishes later
# without harm; a client that goes away mid-call does no harm either; and
# other requests on the same worker are served meanwhile.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry body_both wait_until now_ms);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$t->start_nginx(body_both(loc => 'bytemark_mongo_timeout 300ms; bytemark_mysql_timeout 700ms;'),
                workers => 1);

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

add_pass($t, user => 1, uuid => uuid(1), status => 'db');
$t->mongo_insert(cache_entry(2, passes => [{ pass_uuid => uuid(2), status => 'cached' }]));
is src($t->get('/t?user_id=1')), 'mysql', 'warm-up: MySQL answers';
ok wait_until(sub { $t->mongo_count({ user_id => 1 }) }), 'warm-up: cache filled';
$t->mongo_delete({ user_id => 1 });

# --- MongoDB frozen: the budget answers, MySQL serves ---------------------------------

$t->pause_mongo;
my $t0 = time;
my $r = $t->get('/t?user_id=1');
my $took = time - $t0;
is_deeply [$r->{status}, src($r)], [200, 'mysql'], 'MongoDB frozen: answered by MySQL';
ok $took < 0.3 + 0.7 + 1.0, sprintf('within the budgets plus a margin (%.2fs)', $took);
ok $took >= 0.25, 'after the MongoDB budget was spent';
like $t->error_log, qr/mongo find for user 1 failed after \d+ ms: no answer within 300 ms/,
    'the timeout is logged with its cause';

$t0 = time;
$r = $t->get('/static');
ok $r->{status} == 200 && time - $t0 < 0.5, 'the event loop serves other locations meanwhile';

# a client that gives up while its call is stuck
for (1 .. 5) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->nginx_port, Timeout => 5) or die $!;
    print $s "GET /t?user_id=2 HTTP/1.1\r\nHost: x\r\n\r\n";
    sleep 0.05;
    close $s;
}
$t->resume_mongo;

# --- MySQL frozen: the budget answers with a stale-less 503 ----------------------------

# MongoDB's circuit breaker opened while it was frozen: wait until it is used again
ok wait_until(sub { src($t->get('/t?user_id=2')) eq 'mongo' }, 15), 'MongoDB is used again after it thawed';

$t->pause_mysql;
$t0 = time;
$r = $t->get('/t?user_id=3');
$took = time - $t0;
is $r->{status}, 503, 'MySQL frozen, no cache entry: 503';
ok $took < 0.7 + 1.0, sprintf('within the budget plus a margin (%.2fs)', $took);
$r = $t->get('/t?user_id=2');
is_deeply [$r->{status}, src($r)], [200, 'mongo'], 'MySQL frozen: a fresh entry is still served';

for (1 .. 5) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->nginx_port, Timeout => 5) or die $!;
    print $s "GET /t?user_id=3 HTTP/1.1\r\nHost: x\r\n\r\n";
    sleep 0.05;
    close $s;
}
$t->resume_mysql;

# the abandoned calls complete now; the worker must survive them
ok wait_until(sub { src($t->get('/t?user_id=1')) =~ /^(mongo|mysql)$/ }, 15), 'service resumes';
my @workers = $t->worker_pids;
sleep 1;
$r = $t->get('/t?user_id=1');
is $r->{status}, 200, 'still serving after the abandoned calls returned';
is_deeply [sort $t->worker_pids], [sort @workers], 'the same worker: nothing crashed';

$t->stop_nginx;
my $log = $t->error_log;
unlike $log, qr/\[(alert|crit|emerg)\]|AddressSanitizer|exited on signal/, 'no crash, no sanitizer report';

done_testing;
