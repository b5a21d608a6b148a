#!/usr/bin/perl
# MongoDB: one task carries many lookups (issue 13 part 2). With one worker,
# lookups that arrive while two find tasks are in flight queue, and the next
# task takes them as one find({user_id: {$in: [...]}}); each request still
# gets its own user's document, keeps its own budget, and falls back on its
# own. MongoDB is frozen (SIGSTOP) for a few seconds to hold the first two
# tasks in flight while the others queue. Find commands are counted by the
# server (serverStatus opcounters.query; the stand-in keeps it, FerretDB
# does not) and, everywhere, by the module's own histogram of batch sizes
# (one observation per task, its size the lookups it carried), while the
# duration histogram counts once per lookup (SPEC 3.5: once per request a
# backend operation answered), however the lookups were batched.

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

# budgets of seconds: the machine may be busy with other tests
sub conf {
    my (%o) = @_;
    my $batch = defined $o{batch} ? "bytemark_mongo_batch $o{batch};" : '';
    return <<"EOF";
    bytemark_mongo_uri %%MONGO_URI%%;
    bytemark_mongo_collection %%MONGO_COLL%%;
    bytemark_mysql %%MYSQL%%;
    bytemark_mongo_timeout 6s;
    bytemark_mysql_timeout 5s;
    bytemark_cache_fill off;
    bytemark_breaker failures=1000 open=1s;
    bytemark_stuck_calls 8;
    $batch
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location = /short {
            bytemark_user_id \$arg_user_id;
            bytemark_mongo_timeout 1500ms;
            bytemark_tickets;
        }
        location = /status { bytemark_status; }
        location = /ok { return 200 "ok\\n"; }
    }
EOF
}

# --- nginx -t: the directive's bounds ------------------------------------------

for my $bad ('0', '1001', 'many') {
    my ($rc, $out) = $t->nginx_test(conf(batch => $bad));
    ok $rc != 0 && $out =~ /"bytemark_mongo_batch" must be a number from 1 to 1000, not "\Q$bad\E"/,
        "nginx -t refuses bytemark_mongo_batch $bad, naming the directive" or diag $out;
}
for my $good (1, 1000) {
    my ($rc, $out) = $t->nginx_test(conf(batch => $good));
    is $rc, 0, "nginx -t accepts bytemark_mongo_batch $good" or diag $out;
}

$t->start_nginx(conf(), workers => 1);
my $port = $t->nginx_port;
my ($worker) = $t->worker_pids;

# users 1..20: a cache entry whose pass says whose it is, and a MySQL row
my @users = (1 .. 20);
for my $u (@users) {
    add_pass($t, user => $u, uuid => uuid($u), status => 'db');
}
$t->mongo_insert([ map { cache_entry($_, passes => [{ pass_uuid => uuid($_), status => "u$_" }]) } @users ]);

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

sub body {
    my $r = shift;
    return eval { JSON::PP->new->decode($r->{body}) } // {};
}

# what a request for user $u got: "mongo u7", "mysql db", "503 ..."
sub got {
    my ($r, $u) = @_;
    my $j = body($r);
    return "$r->{status} $r->{body}" unless $r->{status} == 200;
    my $p = $j->{passes}[0] // {};
    return 'wrong user ' . ($j->{user_id} // '?') unless ($j->{user_id} // 0) == $u;
    return src($r) . ' ' . ($p->{status} // 'none');
}

# MongoDB tasks completed (one per find task, see the top), the lookups
# they carried, and the duration histogram's count (one per lookup)
sub tasks   { body(http_raw($port, '/status'))->{bytemark_mongo_batch_size}{count} // 0 }
sub carried { body(http_raw($port, '/status'))->{bytemark_mongo_batch_size}{sum} // 0 }
sub lookups { body(http_raw($port, '/status'))->{bytemark_backend_duration_seconds}{mongo}{count} // 0 }

sub finds { $t->mongo_finds }
my $counted = defined finds();
diag 'the server keeps no find count: counting tasks only' unless $counted;

# requests left pending while MongoDB is frozen: the first two are posted
# (two tasks), the rest queue; then MongoDB runs again
sub frozen_burst {
    my (%o) = @_;
    my @paths = @{ $o{paths} };
    freeze($t, 'mongo');
    my @s;
    for my $i (0 .. $#paths) {
        push @s, send_raw($port, $paths[$i]) or die "send: $!";
        sleep 0.2 if $i == 1;    # the first two are the tasks in flight
    }
    sleep($o{frozen} // 1);
    $o{while_frozen}->(\@s) if $o{while_frozen};
    $t->resume_mongo if $t->mongo_pid;    # (not when killed meanwhile)
    return @s;
}

my $r = http_raw($port, '/t?user_id=1');
is got($r, 1), 'mongo u1', 'warm-up: user 1 from MongoDB';

# --- (d) a lone lookup is not delayed --------------------------------------------

{
    my ($f0, $k0, $l0, $c0) = (finds(), tasks(), lookups(), carried());
    my $t0 = time;
    $r = http_raw($port, '/t?user_id=2');
    my $took = time - $t0;
    is got($r, 2), 'mongo u2', 'a lone lookup: its own document';
    ok $took < 1, sprintf('a lone lookup is answered at once (%.0f ms)', $took * 1000);
    is tasks() - $k0, 1, 'a lone lookup: one task';
    is carried() - $c0, 1, '... of size 1';
    is lookups() - $l0, 1, '... one duration observed';
    is finds() - $f0, 1, 'a lone lookup: one find' if $counted;
}

# --- (a) distinct users, queued while two tasks are in flight -----------------------

{
    my ($f0, $k0, $l0, $c0) = (finds(), tasks(), lookups(), carried());
    my @s = frozen_burst(paths => [ map { "/t?user_id=$_" } @users ]);
    my @bad;
    for my $i (0 .. $#s) {
        my $g = got(read_raw($s[$i]), $users[$i]);
        push @bad, "user $users[$i]: $g" unless $g eq "mongo u$users[$i]";
    }
    is "@bad", '', scalar(@users) . ' concurrent lookups of distinct users: each got its own document from MongoDB';
    my $k = tasks() - $k0;
    ok $k >= 2 && $k <= 4, "... carried by $k tasks, not " . scalar(@users);
    is carried() - $c0, scalar(@users), '... the batch sizes add up to the lookups';
    is lookups() - $l0, scalar(@users), '... and the duration histogram counts each lookup once';
    if ($counted) {
        my $f = finds() - $f0;
        ok $f < @users && $f <= 4, "... the server saw $f find commands for " . scalar(@users) . ' lookups';
    }
}

# --- (b) one user, many lookups: one key ------------------------------------------

{
    my ($f0, $k0, $l0, $c0) = (finds(), tasks(), lookups(), carried());
    my @s = frozen_burst(paths => [ ('/t?user_id=7') x 10 ]);
    my @bad = grep { $_ ne 'mongo u7' } map { got(read_raw($_), 7) } @s;
    is "@bad", '', '10 concurrent lookups of one user: all answered from MongoDB';
    my $k = tasks() - $k0;
    ok $k <= 3, "... by $k tasks (the two in flight, then one for the 8 queued)";
    is lookups() - $l0, 10, '... 10 durations observed, one per request';
    is carried() - $c0, 10, '... batch sizes summing to 10';
    my $prom = http_raw($port, '/status?format=prometheus')->{body};
    like $prom, qr/^# TYPE bytemark_mongo_batch_size histogram$/m, 'Prometheus: the batch size histogram';
    my ($pc) = $prom =~ /^bytemark_mongo_batch_size_count (\d+)$/m;
    my ($pi) = $prom =~ /^bytemark_mongo_batch_size_bucket\{le="\+Inf"\} (\d+)$/m;
    my ($p1) = $prom =~ /^bytemark_mongo_batch_size_bucket\{le="1"\} (\d+)$/m;
    is_deeply [$pc, $pi], [tasks(), tasks()], '... its count and +Inf bucket are the tasks';
    ok defined $p1 && $p1 < $pc, "... some of them carried more than one lookup ($p1 of $pc carried one)";
    ok((!$counted || finds() - $f0 <= 3), '... and as many find commands');
}

# a mix: the same users twice in one batch, each request its own copy
{
    my @paths = map { "/t?user_id=$_" } (3, 4, 5, 6, 5, 6, 5, 6, 3);
    my @s = frozen_burst(paths => \@paths);
    my @bad;
    for my $i (0 .. $#s) {
        my ($u) = $paths[$i] =~ /(\d+)$/;
        my $g = got(read_raw($s[$i]), $u);
        push @bad, "$paths[$i]: $g" unless $g eq "mongo u$u";
    }
    is "@bad", '', 'repeated users in one batch: each request its own user\'s document';
}

# --- (e) budgets that expire in the queue --------------------------------------------

{
    my @paths = map { "/short?user_id=$_" } (11 .. 16);
    my (@res, @took);
    my $t0;
    freeze($t, 'mongo');
    $t0 = time;
    my @s = map { send_raw($port, $_) or die "send: $!" } @paths;
    # answered while MongoDB is still frozen: MySQL, after the 1.5 s budget
    for my $s (@s) { push @res, read_raw($s); push @took, time - $t0 }
    my $frozen_for = time - $t0;
    $t->resume_mongo;
    my @bad;
    for my $i (0 .. $#res) {
        my $u = 11 + $i;
        my $g = got($res[$i], $u);
        push @bad, "user $u: $g" unless $g eq 'mysql db';
    }
    is "@bad", '', 'lookups whose budget expired (queued or running): MySQL\'s answer, as a timed-out lookup';
    my $max = (sort { $b <=> $a } @took)[0];
    ok $max < 5, sprintf('... all within the budget plus MySQL (%.1f s; MongoDB was frozen meanwhile)', $max);
    like $t->error_log, qr/mongo find for user 16 failed after \d+ ms: no answer within 1500 ms/,
        '... logged as a timed-out find';
    ok wait_until(sub { got(http_raw($port, '/t?user_id=11'), 11) eq 'mongo u11' }, 15),
        'the worker serves MongoDB answers again once it runs';
}

# --- (g) clients that go away while queued ------------------------------------------

{
    my ($f0, $k0) = (finds(), tasks());
    my @keep;
    my @s = frozen_burst(
        paths => [ map { "/t?user_id=$_" } (1 .. 8) ],
        while_frozen => sub {
            my $s = shift;
            close $_ for @{$s}[2 .. $#$s];    # the queued ones
            sleep 0.5;                        # nginx sees them go
        });
    my @bad;
    for my $i (0, 1) {
        my $g = got(read_raw($s[$i]), $i + 1);
        push @bad, "user " . ($i + 1) . ": $g" unless $g eq 'mongo u' . ($i + 1);
    }
    is "@bad", '', 'clients gone while queued: the two in flight are answered';
    is got(http_raw($port, '/t?user_id=9'), 9), 'mongo u9', '... and the worker keeps serving';
    my $k = tasks() - $k0;
    ok $k <= 3, "... the lookups of the gone clients left the queue ($k tasks for 3 answered requests)";
    ok((!$counted || finds() - $f0 <= 3), '... no find was sent for them');
}

is_deeply [$t->worker_pids], [$worker], 'the same worker throughout: nothing crashed';

# the gauges count thread tasks, and every task has ended
{
    my $st = body(http_raw($port, '/status'));
    is $st->{bytemark_thread_pool_queue}, 0, 'at rest: no task counted in the thread pool gauge';
    is $st->{bytemark_pool_connections}{mongo}{busy} // 0, 0, 'at rest: no MongoDB client busy';
}

# --- (i) reload while a batch is in flight ---------------------------------------------

{
    my @paths = map { "/t?user_id=$_" } @users[0 .. 11];
    my @s = frozen_burst(paths => \@paths, frozen => 0.5,
                         while_frozen => sub { $t->reload_nginx(conf(batch => 1)); sleep 0.5 });
    my @bad;
    for my $i (0 .. $#s) {
        my $u = $users[$i];
        my $g = got(read_raw($s[$i]), $u);
        push @bad, "user $u: $g" unless $g eq "mongo u$u";
    }
    is "@bad", '', 'reload while lookups are in flight and queued: every request answered by the old worker';
    my @w = $t->worker_pids;
    is scalar(@w), 1, '... a new worker runs';
    ok wait_until(sub { !grep { /shutting down/ } map { Bytemark::Test::_slurp("/proc/$_/cmdline") }
                                  Bytemark::Test::_children($t->nginx_pid) }, 15),
        '... and the old one has exited';
}

# --- (c) bytemark_mongo_batch 1: one find per lookup ------------------------------------

{
    # the new worker's own connections first: a frozen server takes no new one
    ok wait_until(sub { got(http_raw($port, '/t?user_id=1'), 1) eq 'mongo u1' }, 15),
        'the new worker answers from MongoDB';
    my ($f0, $k0, $c0) = (finds(), tasks(), carried());
    my @s = frozen_burst(paths => [ map { "/t?user_id=$_" } 1 .. 6 ]);
    my @bad;
    for my $i (0 .. $#s) {
        my $g = got(read_raw($s[$i]), $i + 1);
        push @bad, "user " . ($i + 1) . ": $g" unless $g eq 'mongo u' . ($i + 1);
    }
    is "@bad", '', 'bytemark_mongo_batch 1: every lookup answered from MongoDB';
    is tasks() - $k0, 6, '... one task per lookup';
    is carried() - $c0, 6, '... each of size 1';
    is finds() - $f0, 6, '... one find per lookup' if $counted;
}

# --- (f) a batch against a MongoDB that is killed ------------------------------------

$t->reload_nginx(conf());
{
    my @s = frozen_burst(paths => [ map { "/t?user_id=$_" } 1 .. 10 ],
                         while_frozen => sub { $t->stop_mongo(fast => 1) });
    my @bad;
    for my $i (0 .. $#s) {
        my $g = got(read_raw($s[$i]), $i + 1);
        push @bad, "user " . ($i + 1) . ": $g" unless $g eq 'mysql db';
    }
    is "@bad", '', 'MongoDB killed under a batch: each request falls back to MySQL on its own';
    is got(http_raw($port, '/t?user_id=12'), 12), 'mysql db', '... and the next lookup too';
}

my $log = $t->error_log;
unlike $log, qr/\[alert\]|\[emerg\]|exited on signal/, 'no alert, no crash in the error log';

done_testing;
