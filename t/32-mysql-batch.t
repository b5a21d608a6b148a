#!/usr/bin/perl
# MySQL: lookups that wait become one query (issue 27). With one worker, a
# server has at most two connections reading at a time; lookups that arrive
# meanwhile queue, and the next free connection sends one prepared
# "... WHERE user_id IN (?, ...)" (pass lookups: "pass_uuid IN") for them.
# Each request still gets its own rows, keeps its own budget, client and
# failover. The primary is frozen (SIGSTOP) to hold the lookups in flight
# while others queue; statements are counted by the server
# (Com_stmt_execute, Com_stmt_prepare).

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass wait_until);
use Bytemark::Load qw(http_raw send_raw read_raw freeze mysql_status);

my $t = Bytemark::Test->new(mysql => 1);          # the primary
my $replica = Bytemark::Test->new(mysql => 1);    # a read replica

my @users = (1 .. 24);

# user u: two v3 passes (b before a: by timestamp) and one v4 pass on the
# primary; one pass on the replica, so that each answer says who gave it
for my $u (@users) {
    add_pass($t, user => $u, uuid => uuid($u * 100 + 1), status => "a$u", ts => 2000);
    add_pass($t, user => $u, uuid => uuid($u * 100 + 2), status => "b$u", ts => 1000);
    add_pass($t, user => $u, uuid => uuid($u * 100 + 3), status => "c$u", ts => 500,
             version => 4);
    add_pass($replica, user => $u, uuid => uuid($u * 100 + 1), status => "replica");
}

my ($primary_dir, $replica_dir) = ($t->mysql_directive, $replica->mysql_directive);

# budgets of seconds: the machine may be busy with other tests; /short's
# budget is 1.5 s, 750 ms for each of the two servers
sub conf {
    my (%o) = @_;
    my $batch = defined $o{batch} ? "bytemark_mysql_batch $o{batch};" : '';
    my $replica_line = $o{no_replica} ? '' : "bytemark_mysql $replica_dir;";
    return <<"EOF";
    bytemark_mysql $primary_dir pool_size=4;
    $replica_line
    bytemark_mysql_timeout 5s;
    bytemark_breaker failures=1000 open=1s;
    bytemark_stuck_calls 8;
    $batch
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location = /short {
            bytemark_user_id \$arg_user_id;
            bytemark_mysql_timeout 1500ms;
            bytemark_tickets;
        }
        location = /p {
            bytemark_user_id \$arg_user_id; bytemark_pass_uuid \$arg_uuid;
            bytemark_pass;
        }
        location = /status { bytemark_status; }
    }
EOF
}

# --- nginx -t: the directive's bounds ------------------------------------------

for my $bad ('0', '257', 'many') {
    my ($rc, $out) = $t->nginx_test(conf(batch => $bad));
    ok $rc != 0 && $out =~ /"bytemark_mysql_batch" must be a number from 1 to 256, not "\Q$bad\E"/,
        "nginx -t refuses bytemark_mysql_batch $bad, naming the directive"
        or diag $out;
}
for my $good (1, 256) {
    my ($rc, $out) = $t->nginx_test(conf(batch => $good));
    is $rc, 0, "nginx -t accepts bytemark_mysql_batch $good" or diag $out;
}

$t->start_nginx(conf(), workers => 1, error_log_level => $ENV{BYTEMARK_DEBUG_LOG} ? 'debug' : 'info');
my $port = $t->nginx_port;
my ($worker) = $t->worker_pids;

my $JSON = JSON::PP->new;

# "primary b7,a7|c7", "replica", "503 ..." for a tickets answer of user $u
sub got {
    my ($r, $u) = @_;
    return "$r->{status} " . ($r->{error} // $r->{body}) unless $r->{status} == 200;
    my $j = eval { $JSON->decode($r->{body}) } // {};
    return 'wrong user ' . ($j->{user_id} // '?') unless ($j->{user_id} // 0) == $u;
    my @p3 = map { $_->{status} } @{ $j->{passes} // [] };
    my @p4 = map { $_->{status} } @{ $j->{passes4} // [] };
    return 'replica' if "@p3" eq 'replica' && !@p4;
    return 'primary ' . join(',', @p3) . '|' . join(',', @p4);
}

sub want { "primary b$_[0],a$_[0]|c$_[0]" }

sub executes { mysql_status($t, 'Com_stmt_execute') }
sub prepares { mysql_status($t, 'Com_stmt_prepare') }

# requests sent while the primary is frozen: the first two, sent apart, are
# the reads in flight, the others queue; then the primary runs again
sub frozen_burst {
    my (%o) = @_;
    my @paths = @{ $o{paths} };
    freeze($t, 'mysql');
    my @s;
    for my $i (0 .. $#paths) {
        push @s, send_raw($port, $paths[$i]) or die "send: $!";
        sleep 0.2 if $i <= 1 && !$o{together};
    }
    sleep($o{frozen} // 1);
    $o{while_frozen}->(\@s) if $o{while_frozen};
    $t->resume_mysql if $t->mysql_pid && !$o{keep_frozen};
    return @s;
}

# the worker's connections, opened before the primary is frozen
{
    my @s = map { send_raw($port, "/t?user_id=$_") } 1 .. 8;
    my @g = map { got(read_raw($s[$_]), $_ + 1) } 0 .. 7;
    is_deeply \@g, [ map { want($_) } 1 .. 8 ], 'warm-up: eight lookups, each its own rows in order';
}

# --- a lone lookup is sent at once, with the one-user statement -----------------

{
    my $e0 = executes();
    my $t0 = time;
    my $r = http_raw($port, '/t?user_id=2');
    my $took = time - $t0;
    is got($r, 2), want(2), 'a lone lookup: its own rows';
    ok $took < 1, sprintf('... answered at once (%.0f ms)', $took * 1000);
    is executes() - $e0, 1, '... one statement';
}

# --- many lookups of distinct users, queued behind two in flight ---------------

{
    my $e0 = executes();
    my @s = frozen_burst(paths => [ map { "/t?user_id=$_" } @users ]);
    my @bad;
    for my $i (0 .. $#s) {
        my $g = got(read_raw($s[$i]), $users[$i]);
        push @bad, "user $users[$i]: $g" unless $g eq want($users[$i]);
    }
    is "@bad", '', scalar(@users) . ' concurrent lookups of distinct users: each its own rows, in order';
    my $e = executes() - $e0;
    ok $e >= 2 && $e <= 4, "... by $e statements, not " . scalar(@users);
}

# --- the same user several times in one batch ------------------------------------

{
    my @u = (3, 4, 3, 5, 6, 5, 6, 5, 6, 3, 4, 7);
    my $e0 = executes();
    my @s = frozen_burst(paths => [ map { "/t?user_id=$_" } @u ]);
    my @bad;
    for my $i (0 .. $#s) {
        my $g = got(read_raw($s[$i]), $u[$i]);
        push @bad, "#$i user $u[$i]: $g" unless $g eq want($u[$i]);
    }
    is "@bad", '', 'repeated users in one batch: each request its own user\'s rows';
    my $e = executes() - $e0;
    ok $e <= 4, "... by $e statements";
}

# --- pass lookups: one query, each answer scoped to its user ---------------------

{
    # [user, uuid number, expected]: a pass of another user is 404
    my @asks = ([1, 101, 'a1'], [2, 202, 'b2'], [3, 303, 'c3'], [4, 101, 404],
                [5, 501, 'a5'], [5, 501, 'a5'], [6, 999, 404], [7, 702, 'b7'],
                [8, 803, 'c8'], [9, 901, 'a9']);
    my $e0 = executes();
    my @s = frozen_burst(paths => [ map { "/p?user_id=$_->[0]&uuid=" . uuid($_->[1]) } @asks ]);
    my @bad;
    for my $i (0 .. $#s) {
        my $r = read_raw($s[$i]);
        my ($u, $n, $want) = @{ $asks[$i] };
        my $g = $r->{status} == 200
              ? eval { my $j = $JSON->decode($r->{body});
                       $j->{user_id} == $u && $j->{pass}{pass_uuid} eq uuid($n)
                           ? $j->{pass}{status} : "wrong pass $r->{body}" } // 'bad json'
              : $r->{status};
        push @bad, "user $u pass $n: $g" unless $g eq $want;
    }
    is "@bad", '', 'pass lookups in one batch: each its own pass, another user\'s pass is 404';
    my $e = executes() - $e0;
    ok $e <= 4, "... by $e statements for " . scalar(@asks) . ' lookups';
}

# --- budgets per location: the short ones leave, the others are answered ---------

{
    # all sent together: the first batch carries both kinds of budget; the
    # short ones are read while the primary is still frozen
    my @paths = map { ($_ % 2 ? '/short' : '/t') . "?user_id=$_" } 11 .. 22;
    freeze($t, 'mysql');
    my $t0 = time;
    my @s = map { send_raw($port, $_) or die "send: $!" } @paths;
    my (@bad, @short_took);
    for my $i (grep { $_ % 2 == 0 } 0 .. $#s) {
        my $r = read_raw($s[$i], timeout => 3);
        push @short_took, time - $t0;
        my $g = got($r, 11 + $i);
        push @bad, 'user ' . (11 + $i) . ": $g" unless $g eq 'replica';
    }
    my $frozen_for = time - $t0;
    $t->resume_mysql;
    for my $i (grep { $_ % 2 } 0 .. $#s) {
        my $g = got(read_raw($s[$i]), 11 + $i);
        push @bad, 'user ' . (11 + $i) . ": $g" unless $g eq want(11 + $i);
    }
    is "@bad", '', 'a batch whose budget expires for some: those go to the replica, the others get the primary\'s rows';
    my $max = (sort { $b <=> $a } @short_took)[0];
    ok $max < 1.5 + 1, sprintf('... the short ones within their 1.5 s budget (%.2f s, while the primary was frozen)', $max);
    like $t->error_log, qr/mysql tickets query for user \d+ failed after \d+ ms: no answer within 750 ms/,
        '... logged as timed-out queries';
}

# --- clients that go away while queued: no statement for them --------------------

{
    my $e0 = executes();
    my @s = frozen_burst(
        paths => [ map { "/t?user_id=$_" } 1 .. 10 ],
        while_frozen => sub {
            my $s = shift;
            close $_ for @{$s}[2 .. $#$s];    # the queued ones
            sleep 0.5;                        # nginx sees them go
        });
    my @bad;
    for my $i (0, 1) {
        my $g = got(read_raw($s[$i]), $i + 1);
        push @bad, "user " . ($i + 1) . ": $g" unless $g eq want($i + 1);
    }
    is "@bad", '', 'clients gone while queued: the two in flight are answered';
    is got(http_raw($port, '/t?user_id=9'), 9), want(9), '... and the worker keeps serving';
    my $e = executes() - $e0;
    ok $e >= 2 && $e <= 3, "... no statement was sent for the gone ones ($e: the two in flight, then user 9)";
}

# --- clients that go away while their batch runs --------------------------------

{
    my @s = frozen_burst(
        paths => [ map { "/t?user_id=$_" } 1 .. 10 ], together => 1,
        while_frozen => sub { close $_ for @{ $_[0] }[0 .. 4]; sleep 0.5 });
    my @bad;
    for my $i (5 .. 9) {
        my $g = got(read_raw($s[$i]), $i + 1);
        push @bad, "user " . ($i + 1) . ": $g" unless $g eq want($i + 1);
    }
    is "@bad", '', 'clients gone while their batch runs: the others of the batch are answered';
}

# --- a batch the server answers with an error: each request fails as one ------

{
    # on both servers: a replica would say the same
    $_->sql('RENAME TABLE bytemark_pass TO bytemark_pass_away') for $t, $replica;
    my $log_at = length $t->error_log;
    my @s = frozen_burst(paths => [ map { "/t?user_id=$_" } 1 .. 8 ], together => 1);
    my @bad;
    for my $i (0 .. $#s) {
        my $r = read_raw($s[$i]);
        push @bad, "user " . ($i + 1) . ": $r->{status} $r->{body}"
            unless $r->{status} == 503 && $r->{body} =~ /^\{"error":"unavailable","message":"[^"]+"\}$/;
    }
    $_->sql('RENAME TABLE bytemark_pass_away TO bytemark_pass') for $t, $replica;
    is "@bad", '', 'a batch that fails with an SQL error: each of its requests is 503';
    my @failed = substr($t->error_log, $log_at) =~ /mysql tickets query for user (\d+) failed/g;
    my %u = map { $_ => 1 } @failed;
    is scalar(keys %u), 8, '... each request logged its own failure';
    ok wait_until(sub { got(http_raw($port, '/t?user_id=3'), 3) eq want(3) }, 10),
        'the table back: the statements answer again';
}

is_deeply [$t->worker_pids], [$worker], 'the same worker throughout: nothing crashed';

# --- statements stay prepared: Com_stmt_prepare does not grow with traffic ------

{
    # bursts of every size, twice to prepare what they use, then counted
    my $burst = sub {
        for my $n (2, 5, 9, 17, 24, 3, 12) {
            my @s = map { send_raw($port, "/t?user_id=$_") } 1 .. $n;
            read_raw($_) for @s;
        }
    };
    $burst->() for 1 .. 2;
    my ($p0, $e0) = (prepares(), executes());
    $burst->() for 1 .. 4;
    my ($p, $e) = (prepares() - $p0, executes() - $e0);
    ok $e >= 20, "traffic: $e statements executed";
    ok $p <= $e / 10, "... and $p prepared: statements stay prepared across batches";
}

# --- reload while a batch is in flight and lookups queue -------------------------

{
    my @paths = map { "/t?user_id=$_" } 1 .. 12;
    my @s = frozen_burst(paths => \@paths, frozen => 0.5, together => 1,
                         while_frozen => sub { $t->reload_nginx(conf(batch => 1)); sleep 0.5 });
    my @bad;
    for my $i (0 .. $#s) {
        my $g = got(read_raw($s[$i]), $i + 1);
        push @bad, "user " . ($i + 1) . ": $g" unless $g eq want($i + 1);
    }
    is "@bad", '', 'reload while a batch is in flight: every request answered by the old worker';
    ok wait_until(sub { !grep { /shutting down/ } map { Bytemark::Test::_slurp("/proc/$_/cmdline") }
                                  Bytemark::Test::_children($t->nginx_pid) }, 15),
        '... and the old worker has exited';
}

# --- bytemark_mysql_batch 1: one statement per lookup, as before ------------------

{
    my @s = map { send_raw($port, "/t?user_id=$_") } 1 .. 4;    # the new worker's connections
    read_raw($_) for @s;
    my $e0 = executes();
    @s = frozen_burst(paths => [ map { "/t?user_id=$_" } 1 .. 8 ]);
    my @bad;
    for my $i (0 .. $#s) {
        my $g = got(read_raw($s[$i]), $i + 1);
        push @bad, "user " . ($i + 1) . ": $g" unless $g eq want($i + 1);
    }
    is "@bad", '', 'bytemark_mysql_batch 1: every lookup answered';
    is executes() - $e0, 8, '... one statement per lookup';
}

# --- a primary killed while a batch is in flight ---------------------------------

$t->reload_nginx(conf());
{
    my @s = map { send_raw($port, "/t?user_id=$_") } 1 .. 4;
    read_raw($_) for @s;
    @s = frozen_burst(paths => [ map { "/t?user_id=$_" } 1 .. 10 ], together => 1,
                      while_frozen => sub {
                          # killed while stopped (stop_mysql would wake it first)
                          kill 'KILL', $t->mysql_pid;
                          sleep 0.3;
                          $t->stop_mysql(fast => 1);
                      });
    my @bad;
    for my $i (0 .. $#s) {
        my $g = got(read_raw($s[$i]), $i + 1);
        push @bad, "user " . ($i + 1) . ": $g" unless $g eq 'replica';
    }
    is "@bad", '', 'primary killed under a batch: each request fails over to the replica';
    is got(http_raw($port, '/t?user_id=12'), 12), 'replica', '... and the next lookup too';
}

# without a replica: each request of the failed batch is a 503
$t->start_mysql;
$t->reload_nginx(conf(no_replica => 1));
{
    my @s = map { send_raw($port, "/t?user_id=$_") } 1 .. 4;
    my @g = map { got(read_raw($s[$_]), $_ + 1) } 0 .. 3;
    is_deeply \@g, [ map { want($_) } 1 .. 4 ], 'the primary restarted: its rows again';
    my $log_at = length $t->error_log;
    @s = frozen_burst(paths => [ map { "/t?user_id=$_" } 1 .. 8 ], together => 1,
                      while_frozen => sub {
                          kill 'KILL', $t->mysql_pid;
                          sleep 0.3;
                          $t->stop_mysql(fast => 1);
                      });
    my @bad;
    for my $i (0 .. $#s) {
        my $r = read_raw($s[$i]);
        push @bad, "user " . ($i + 1) . ": $r->{status}"
            unless $r->{status} == 503 && $r->{body} =~ /"error":"unavailable"/;
    }
    is "@bad", '', 'primary killed under a batch, no replica: each request is 503';
    like substr($t->error_log, $log_at),
        qr/mysql tickets query for user \d+ failed after \d+ ms: (cannot connect|execute|store result|fetch)/,
        '... each logged as a failed query';
}

my $log = $t->error_log;
if (my $f = $ENV{BYTEMARK_DEBUG_LOG}) { open my $fh, '>', $f or die; print $fh $log; close $fh }
unlike $log, qr/\[alert\]|\[emerg\]|exited on signal/, 'no alert, no crash in the error log';

done_testing;
