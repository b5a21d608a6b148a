#!/usr/bin/perl
# MongoDB lookups when the thread pool's queue is full (issue 24 item 6,
# SPEC 6: ngx_thread_task_post() fails, answer at once, never wait). One
# thread and a queue of one (thread_pool bm threads=1 max_queue=1), MongoDB
# frozen: a lookup holds the thread, a purge takes the queue's only place,
# and every lookup after that fails to post its task. Each must get a clean
# answer at once -- MySQL's, or 503 when MySQL is frozen too -- without the
# worker crashing or the call being finished under the content handler that
# starts it. Then lookups that queue behind two tasks in flight, while the
# pool is full, are answered when MongoDB runs again, and the server keeps
# serving throughout. Budgets are left at their defaults, except a longer
# one in the locations that hold the thread and the queue.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry wait_until);
use Bytemark::Load qw(http_raw send_raw read_raw freeze);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
plan skip_all => 'needs a MongoDB the test can pause' unless $t->mongo_controllable;

$t->start_nginx(<<'EOF', thread_pool => 'bm threads=1 max_queue=1');
    bytemark_mongo_uri %%MONGO_URI%%;
    bytemark_mongo_collection %%MONGO_COLL%%;
    bytemark_mysql %%MYSQL%%;
    bytemark_thread_pool bm;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_user_id $arg_user_id; bytemark_tickets; }
        location = /slow {
            bytemark_user_id $arg_user_id;
            bytemark_mongo_timeout 20s;
            bytemark_tickets;
        }
        location = /purge {
            bytemark_user_id $arg_user_id;
            bytemark_mongo_timeout 20s;
            bytemark_purge;
        }
        location = /status { bytemark_status; }
        location = /static { return 200 "static ok\n"; }
    }
EOF
my $port = $t->nginx_port;
my @workers = $t->worker_pids;

for my $u (1 .. 40) {
    add_pass($t, user => $u, uuid => uuid($u), status => 'db');
}
$t->mongo_insert([ map { cache_entry($_, passes => [{ pass_uuid => uuid($_), status => "u$_" }]) } 21 .. 40 ]);

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }
sub body { eval { JSON::PP->new->decode($_[0]{body}) } // {} }

sub queue_gauge {
    return body(http_raw($port, '/status'))->{bytemark_thread_pool_queue} // -1;
}

# --- the pool's queue full: lookups fail at post time, answered by MySQL --------------

freeze($t, 'mongo');
my $hold = send_raw($port, '/slow?user_id=1') or die "send: $!";      # the thread
sleep 0.3;
my $purge = send_raw($port, '/purge?user_id=50', method => 'DELETE') or die "send: $!";   # the queue
sleep 0.3;
is queue_gauge(), 2, 'MongoDB frozen: a lookup on the thread, a purge in the queue';

my $t0 = time;
my @s = map { send_raw($port, "/t?user_id=$_") or die "send: $!" } 2 .. 9;
my @res = map { read_raw($_) } @s;
my $took = time - $t0;
my @bad = grep { $_ ne '200 mysql' } map { "$_->{status} " . src($_) } @res;
is "@bad", '', '8 concurrent lookups that found the queue full: 200 from MySQL';
ok $took < 2, sprintf('answered at once, not after the MongoDB budget (%.0f ms)', $took * 1000);
like $t->error_log, qr/mongo find for user \d+ not started: thread pool queue is full/,
    'the lookups that could not post their task say so in the error log';
my $r = http_raw($port, '/static');
is $r->{status}, 200, 'a static location is served meanwhile';

# --- MySQL frozen too: a clean 503 ------------------------------------------------------

freeze($t, 'mysql');
@s = map { send_raw($port, "/t?user_id=$_") or die "send: $!" } 10 .. 11;
@res = map { read_raw($_) } @s;
$t->resume_mysql;
@bad = grep { $_ ne '503 unavailable' } map { "$_->{status} " . (body($_)->{error} // $_->{body}) } @res;
is "@bad", '', 'MySQL frozen too: 503 unavailable for each';
is_deeply [sort keys %{ body($res[0]) }], [qw(error message)], 'the 503 body has exactly error and message';

$t->resume_mongo;
$r = read_raw($hold);
is "$r->{status} " . src($r), '200 mysql', 'MongoDB runs again: the lookup on the thread is answered (no entry: MySQL)';
$r = read_raw($purge);
is $r->{status}, 204, 'and the purge in the queue';
ok wait_until(sub { queue_gauge() == 0 }, 30), 'the thread pool is idle';

# --- lookups queued behind two tasks while the pool is full -----------------------------

freeze($t, 'mongo');
# the first two post the two tasks a worker runs (one on the thread, one
# in the pool's queue); the others wait in the worker's queue
@s = ();
for my $u (21 .. 28) {
    push @s, send_raw($port, "/slow?user_id=$u") or die "send: $!";
    sleep 0.2 if $u <= 22;
}
# a purge cannot post its task: 503 at once
$r = http_raw($port, '/purge?user_id=50', method => 'DELETE');
is "$r->{status} " . (body($r)->{error} // ''), '503 unavailable', 'a purge that finds the queue full: 503';
# a lookup with the default budget waits in the worker's queue, then MySQL
$r = http_raw($port, '/t?user_id=29');
is "$r->{status} " . src($r), '200 mysql', 'a lookup with the default budget: MySQL after its budget';
$r = http_raw($port, '/static');
is $r->{status}, 200, 'a static location is still served';
$t->resume_mongo;
@bad = ();
for my $i (0 .. $#s) {
    my $u = 21 + $i;
    my $x = read_raw($s[$i]);
    my $p = body($x)->{passes} // [];
    my $g = "$x->{status} " . src($x) . ' ' . ($p->[0]{status} // 'none');
    push @bad, "user $u: $g" unless $g eq "200 mongo u$u";
}
is "@bad", '', 'the queued lookups are answered from MongoDB once it runs again';

# --- the rest keeps serving ----------------------------------------------------------------

ok wait_until(sub { queue_gauge() == 0 }, 30), 'the thread pool is idle again';
$r = http_raw($port, '/t?user_id=30');
is "$r->{status} " . src($r), '200 mongo', 'a lookup after all that: from MongoDB';
is_deeply [sort $t->worker_pids], [sort @workers], 'the same worker process throughout';
my $log = $t->error_log;
unlike $log, qr/signal \d+|\[alert\]|\[emerg\]/, 'no crash and no alert in the error log';

$t->stop_nginx;
done_testing;
