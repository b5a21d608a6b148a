#!/usr/bin/perl
# The drivers' own limits follow the budgets where operators put them (SPEC
# 5: left at their defaults, or set per server or location; never in http{}
# here), so that no thread or connection waits on a silent server for more
# than a few budgets:
#   - MongoDB frozen: the abandoned lookups give their threads back while it
#     is still frozen (socketTimeoutMS from the merged budgets, not -2);
#   - a reload while MongoDB is frozen: the old worker exits within
#     worker_shutdown_timeout instead of waiting for its threads forever;
#   - a row lock held 2.5 s, then 3.5 s, under "bytemark_mysql_timeout 5s"
#     in a location: the ingest waits for it and answers 200, its statement
#     never cut (the MySQL read timeout is not 1 s whatever the location
#     says);
#   - maxPoolSize=1 in the URI: a thread that finds no free client gives up
#     within its budget instead of blocking in mongoc_client_pool_pop();
#   - bytemark_stuck_calls applies to purges and to the cache update of an
#     ingest, as it does to lookups: refused at once, no thread posted.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use POSIX qw(_exit);
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry wait_until);
use Bytemark::Load qw(http_raw send_raw read_raw freeze);

my $JSON = JSON::PP->new->utf8->canonical;

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$t->mongo_index_unique('user_id');

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

sub status {
    my $r = http_raw($t->nginx_port, '/status');
    return $r->{status} == 200 ? $JSON->decode($r->{body}) : {};
}

# MongoDB tasks on the thread pool, and MongoDB clients out of the pool
sub threads_busy { status()->{bytemark_thread_pool_queue} // -1 }
sub clients_busy { status()->{bytemark_pool_connections}{mongo}{busy} // 0 }

sub uri_with {
    my ($opt) = @_;
    my $u = $t->mongo_uri;
    return $u . ($u =~ /\?/ ? '&' : '?') . $opt;
}

sub conf {
    my (%o) = @_;
    my $uri = $o{uri} // '%%MONGO_URI%%';
    my $extra = $o{extra} // '';
    return "
    bytemark_mongo_uri $uri;
    bytemark_mongo_collection %%MONGO_COLL%%;
    bytemark_mysql %%MYSQL%%;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location = /static { return 200 \"static ok\\n\"; }
        location = /status { bytemark_status; }
        $extra
    }";
}

add_pass($t, user => $_, uuid => uuid($_), status => "db$_") for 1 .. 12;

# --- 1. MongoDB frozen, default budgets: the threads come back -------------------

$t->start_nginx(conf(), workers => 1, main => 'worker_shutdown_timeout 3s;');

is src(http_raw($t->nginx_port, '/t?user_id=1')), 'mysql', 'warm-up: MySQL answers, the cache is filled';
ok wait_until(sub { $t->mongo_count({ user_id => 1 }) }, 10), 'warm-up: the entry is there';
is src(http_raw($t->nginx_port, '/t?user_id=1')), 'mongo', 'warm-up: MongoDB answers';

freeze($t, 'mongo');
my $frozen_at = time;
for my $u (2, 3) {
    my $t0 = time;
    my $r = http_raw($t->nginx_port, "/t?user_id=$u");
    is_deeply [$r->{status}, src($r)], [200, 'mysql'], "MongoDB frozen: user $u answered by MySQL";
    ok time - $t0 < 0.3 + 1.0 + 1.5, sprintf('within the default budgets (%.2fs)', time - $t0);
}
ok threads_busy() >= 1, 'the abandoned lookups still hold their threads';

my $back = wait_until(sub { threads_busy() == 0 && clients_busy() == 0 }, 12);
my $took = time - $frozen_at;
ok $back, sprintf('the threads and clients are given back while MongoDB is still frozen (%.1fs)', $took);
ok $t->{paused}{mongo}, 'MongoDB is still frozen';
like $t->error_log, qr/mongo find for user 2 failed/, 'the abandoned lookup logs its failure when the driver gives up';

# --- 2. a reload while MongoDB is frozen ------------------------------------------

{
    # a thread busy in the driver at the time of the reload
    my $r = http_raw($t->nginx_port, '/t?user_id=4');
    is $r->{status}, 200, 'MongoDB frozen: a lookup just before the reload';
    ok threads_busy() >= 1, 'its thread is busy in the driver';
    my @old = $t->worker_pids;
    my $t0 = time;
    $t->reload_nginx;
    my $gone = wait_until(sub { !grep { kill 0, $_ } @old }, 3 + 12);
    ok $gone, sprintf('the old worker exits within worker_shutdown_timeout (3s) and a driver limit (%.1fs)',
                      time - $t0);
    ok $t->{paused}{mongo}, 'MongoDB was frozen all along';
    is http_raw($t->nginx_port, '/static')->{status}, 200, 'the new worker serves';
}

$t->resume_mongo;
ok wait_until(sub { src(http_raw($t->nginx_port, '/t?user_id=1')) eq 'mongo' }, 20),
    'MongoDB answers again after it thawed';
$t->stop_nginx;

# --- 3. a 2.5 s row lock under a 5 s location budget ------------------------------

$t->start_nginx(conf(extra => '
        location ~ ^/ingest/([0-9]+)$ {
            bytemark_user_id $1;
            bytemark_mysql_timeout 5s;
            bytemark_ingest;
        }'), workers => 1);

# The ingest's upsert waits for the row lock; on a lost connection (the
# read timeout cutting the statement) it is tried again, so a lock a little
# longer than a couple of read timeouts is what a 1 s limit cannot survive.
# The lock is released by killing its session $hold seconds after the
# ingest was sent, whatever the machine's load.
my $n = 0;
for my $hold (2.5, 3.5) {
    $n++;
    my $user = 6 + $n;
    my $u = uuid($user);
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        eval {
            $t->sql("BEGIN; SELECT id FROM bytemark_pass WHERE pass_uuid = '$u' FOR UPDATE;"
                    . " SELECT SLEEP(61); COMMIT;");
        };
        print STDERR "# locking session: $@" if $@ && $@ !~ /Lost connection|Query execution was interrupted|killed/i;
        _exit(0);
    }
    # the session sleeps once it holds the lock (other sessions, FerretDB's
    # on the same server say, may hold locks of their own)
    my $holder = wait_until(sub {
        my $rows = $t->sql("SELECT ID FROM information_schema.PROCESSLIST"
                           . " WHERE INFO LIKE 'SELECT SLEEP(61)%'");
        @$rows ? $rows->[0][0] : 0;
    }, 10);
    ok $holder, "another session holds the row lock";

    my $t0 = time;
    my $s = send_raw($t->nginx_port, "/ingest/$user", method => 'POST',
                     headers => { 'Content-Type' => 'application/json' },
                     body => $JSON->encode({ pass_uuid => $u, status => 'locked-then-written' }));
    sleep $hold - (time - $t0);
    $t->sql("KILL $holder") if $holder;
    my $r = read_raw($s, timeout => 15);
    my $took = $r->{t1} - $t0;
    is $r->{status}, 200, "a ${hold}s lock under a 5s location budget: the ingest waits and answers 200"
        or diag $r->{body};
    ok $took >= $hold - 0.2, sprintf('it did wait for the lock (%.2fs)', $took);
    ok $took < 5 + 1, 'within its location budget';
    waitpid $pid, 0;
    is $t->sql("SELECT status FROM bytemark_pass WHERE pass_uuid = '$u'")->[0][0], 'locked-then-written',
        'the row is written';
}
unlike $t->error_log, qr/Lost connection to server during query/,
    'no statement was cut by the driver\'s read timeout';
$t->stop_nginx;

# --- 4. maxPoolSize=1: no thread waits for a client beyond its budget -------------

$t->start_nginx(conf(uri => uri_with('maxPoolSize=1')), workers => 1,
                thread_pool => 'threads=4 max_queue=65536');

{
    # concurrent misses: lookups, then fills, on one client
    $t->mongo_delete({});
    my @s = map { send_raw($t->nginx_port, "/t?user_id=$_") } 1 .. 10;
    my @r = map { read_raw($_, timeout => 10) } @s;
    is scalar(grep { $_->{status} == 200 } @r), 10, 'maxPoolSize=1: concurrent lookups and fills are answered';
    ok wait_until(sub { $t->mongo_count({}) == 10 }, 10), 'every fill went through the one client';
    @s = map { send_raw($t->nginx_port, "/t?user_id=$_") } 1 .. 10;
    @r = map { read_raw($_, timeout => 10) } @s;
    is scalar(grep { $_->{status} == 200 && src($_) eq 'mongo' } @r), 10, 'and the hits are served by MongoDB';

    freeze($t, 'mongo');
    my $t0 = time;
    @s = map { send_raw($t->nginx_port, "/t?user_id=$_") } 2, 3, 5, 6;
    @r = map { read_raw($_, timeout => 10) } @s;
    is scalar(grep { $_->{status} == 200 } @r), 4, 'MongoDB frozen: concurrent lookups answered by the fallback';
    ok time - $t0 < 0.3 + 1.0 + 2, sprintf('within their budgets (%.2fs)', time - $t0);
    is http_raw($t->nginx_port, '/static')->{status}, 200, 'the worker keeps serving';
    ok wait_until(sub { threads_busy() == 0 && clients_busy() == 0 }, 12),
        'no thread stays blocked waiting for the one client while MongoDB is frozen';
    like $t->error_log, qr/no MongoDB client free in the pool within \d+ ms/,
        'a thread that found no free client gave up within its budget';
    ok $t->{paused}{mongo}, 'MongoDB is still frozen';
    $t->resume_mongo;
    ok wait_until(sub { src(http_raw($t->nginx_port, '/t?user_id=2')) eq 'mongo' }, 20),
        'MongoDB serves again through its one client';
}
$t->stop_nginx;

# --- 5. the stuck-call limit applies to purges and ingest cache updates -----------

# the URI lets a call hang for a minute (an operator may raise it): the
# calls that outlive their budgets stay stuck for the whole check
$t->start_nginx(conf(uri => uri_with('socketTimeoutMS=60000'), extra => '
        location ~ ^/purge/([0-9]+)$ {
            bytemark_user_id $1;
            bytemark_mongo_timeout 3s;
            bytemark_purge;
        }
        location ~ ^/ingest/([0-9]+)$ {
            bytemark_user_id $1;
            bytemark_mongo_timeout 3s;
            bytemark_ingest;
        }'), workers => 1);

{
    is src(http_raw($t->nginx_port, '/t?user_id=1')), 'mongo', 'warm-up: MongoDB answers';
    freeze($t, 'mongo');

    # two lookups outlive their budgets: bytemark_stuck_calls (2) is reached
    is http_raw($t->nginx_port, "/t?user_id=$_")->{status}, 200, "MongoDB frozen: lookup $_ answered" for 8, 9;
    my $busy = threads_busy();
    ok $busy >= 2, "the two stuck lookups hold their threads ($busy)";

    my $t0 = time;
    my $r = http_raw($t->nginx_port, '/purge/8', method => 'DELETE');
    my $took = time - $t0;
    is $r->{status}, 503, 'a purge while calls are stuck: 503';
    ok $took < 1.5, sprintf('refused at once, not after its 3 s budget (%.2fs)', $took);
    is threads_busy(), $busy, 'no thread was taken for it';

    $t0 = time;
    $r = $t->http('POST', '/ingest/8', { 'Content-Type' => 'application/json' },
                  { pass_uuid => uuid(108), status => 'acked-while-stuck' });
    $took = time - $t0;
    is $r->{status}, 200, 'an ingest while calls are stuck: committed, 200';
    ok $took < 1.5, sprintf('its cache update is not tried: no wait for its 3 s budget (%.2fs)', $took);
    is threads_busy(), $busy, 'no thread was taken for the cache update';
    like $t->error_log, qr/cache update after the ingest for user 8 failed: not tried: too many stuck MongoDB calls/,
        'the skipped cache update is logged, and the user noted';

    $t->resume_mongo;
    ok wait_until(sub { threads_busy() == 0 }, 20), 'the stuck calls return once MongoDB thaws';
    ok wait_until(sub {
        my $x = http_raw($t->nginx_port, '/t?user_id=8');
        $x->{status} == 200 && $x->{body} =~ /acked-while-stuck/;
    }, 20), 'the acknowledged pass is served afterwards';
}
$t->stop_nginx;

done_testing;
