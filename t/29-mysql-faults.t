#!/usr/bin/perl
# MySQL on the event loop, broken in the middle of an operation (issue 13):
# a relay that understands just enough of the MySQL protocol kills or
# stalls a connection during connect, during execute, during the result.
# Each time the request gets a clean answer (a retry on a fresh connection,
# or 503 at the end of its budget), the broken connection is closed by
# nginx and never reused, and the worker keeps serving. A statement whose
# budget is spent is not interrupted: it ends late on the event loop, or the
# client library's own timeout (the budget + 1 s) fails it and its
# connection is closed; meanwhile the pool's other connection serves.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass wait_until);
use Bytemark::MysqlFault;
use Bytemark::Load;

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

my $t = Bytemark::Test->new(mysql => 1);
my $relay = Bytemark::MysqlFault->start($t, to => $t->mysql_port);
my $port = $relay->port;

# two connections per worker: one may be draining a stalled statement
$t->start_nginx("
bytemark_mysql host=127.0.0.1 port=$port user=" . $t->mysql_user . ' password='
    . $t->mysql_password . ' database=' . $t->mysql_db . " pool_size=2;
bytemark_mysql_timeout 1s;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
    location = /ingest { bytemark_user_id \$arg_user_id; bytemark_ingest; }
    location = /static { return 200 \"static ok\\n\"; }
}
");
my ($worker) = $t->worker_pids;

add_pass($t, user => 5, uuid => uuid(5), status => 'active');

sub lookup {
    my $t0 = time;
    my $r = $t->get('/t?user_id=5');
    $r->{took} = time - $t0;
    return $r;
}

sub ok_answer {
    my ($r, $what) = @_;
    ok $r->{status} == 200 && src($r) eq 'mysql' && $t->json($r)->{passes}[0]{pass_uuid} eq uuid(5), $what
        or diag "$r->{status} $r->{content}";
}

# --- baseline: the pool keeps its connection --------------------------------

ok_answer(lookup(), 'through the relay');
ok_answer(lookup(), 'again');
is $relay->count('accept'), 1, 'both lookups used the same pooled connection';

# Runs a fault; returns the accept count before it.
sub fault {
    my (@modes) = @_;
    my $before = $relay->count('accept');
    $relay->mode(@modes);
    return $before;
}

# the connection the fault hit was closed by nginx
sub closed_after_fault {
    my ($what) = @_;
    my @f = grep { $_->[0] eq 'fault' } $relay->events;
    my $n = $f[-1][1];
    ok wait_until(sub { grep { $_ == $n } $relay->closed_by_client }, 5),
        "$what: nginx closed the broken connection #$n (by the library's timeout)";
}

# --- killed during execute: replaced at once, the read retried --------------

my $before = fault('kill-execute');
my $r = lookup();
ok_answer($r, 'killed during execute: the read is retried on a fresh connection');
is $relay->count('accept'), $before + 1, '... which is a new connection';

fault('kill-execute!');
$r = lookup();
is $r->{status}, 503, 'killed during every execute: 503';
ok $r->{took} < 1, sprintf('... at once, not at the end of the budget (%.2f s)', $r->{took});
like $t->error_log, qr/bytemark: .*mysql.*(Lost connection|server has gone away|lost)/i, 'the cause is logged';
fault('pass');
ok_answer(lookup(), 'and served again once the server is reachable');

# --- killed during connect: 503 at once, then a fresh connection ------------

# the pooled connection is killed first, so that the retry connects anew
fault('kill-execute', 'refuse!');
$r = lookup();
is $r->{status}, 503, 'killed during connect: 503';
ok $r->{took} < 1, sprintf('... at once (%.2f s)', $r->{took});
like $t->error_log, qr/cannot connect to mysql server #1/, 'logged as a connect failure';
fault('pass');
ok wait_until(sub { lookup()->{status} == 200 }, 5), 'served again after it';

# --- paused during connect: 503 at the end of the budget --------------------

$before = fault('kill-execute', 'stall-connect!');
$r = lookup();
is $r->{status}, 503, 'server silent during the handshake: 503';
ok $r->{took} >= 0.9 && $r->{took} < 2, sprintf('... at the end of the 1 s budget (%.2f s)', $r->{took});
closed_after_fault('silent during the handshake');
fault('pass');
ok_answer(lookup(), 'a new connection serves the next lookup');

# --- paused during execute ---------------------------------------------------

$before = fault('stall-execute');
$r = lookup();
is $r->{status}, 503, 'no answer to the execute: 503';
ok $r->{took} >= 0.9 && $r->{took} < 2, sprintf('... at the end of the budget (%.2f s)', $r->{took});
closed_after_fault('no answer to the execute');
ok_answer(lookup(), 'the next lookup is served');
is $relay->count('accept'), $before + 1, '... on a new connection: the stalled one was not reused';

# --- the budget expires during a half-read result ----------------------------

$before = fault('half-result');
$r = lookup();
is $r->{status}, 503, 'half a result, then silence: 503';
ok $r->{took} >= 0.9 && $r->{took} < 2, sprintf('... at the end of the budget (%.2f s)', $r->{took});
closed_after_fault('half-read result');
ok_answer(lookup(), 'the next lookup is served');
is $relay->count('accept'), $before + 1, '... on a new connection, not the half-read one';

# --- killed during the result -------------------------------------------------

$before = fault('kill-fetch');
ok_answer(lookup(), 'killed in the middle of the result: retried on a fresh connection');
is $relay->count('accept'), $before + 1, '... a new one';

# --- an ingest stalled during its upsert: nothing half-written ----------------

my $body = '{"pass_uuid":"' . uuid(6) . '","version":3,"status":"active","timestamp":1000}';
$before = fault('stall-execute');
$r = $t->http(POST => '/ingest?user_id=6', { 'Content-Type' => 'application/json' }, $body);
is $r->{status}, 503, 'an ingest whose upsert gets no answer: 503';
closed_after_fault('stalled upsert');
is $t->sql("SELECT COUNT(*) FROM bytemark_pass WHERE user_id = 6")->[0][0], 0,
    'its transaction died with its connection: nothing was written';
$r = $t->http(POST => '/ingest?user_id=6', { 'Content-Type' => 'application/json' }, $body);
is $r->{status}, 200, 'the ingest run again succeeds' or diag $r->{content};
is $t->sql("SELECT COUNT(*) FROM bytemark_pass WHERE user_id = 6")->[0][0], 1, 'and wrote its pass once';

# --- waiting for the one connection: each request keeps its own budget -------

fault('stall-execute');
my @s = map { Bytemark::Load::send_raw($t->nginx_port, '/t?user_id=5') } 1 .. 3;
my @res = map { Bytemark::Load::read_raw($_) } @s;
is scalar(grep { $_->{status} == 503 } @res), scalar(grep { $_->{status} != 200 } @res),
    'requests queued behind a stalled connection fail cleanly (503) or are served';
ok_answer(lookup(), 'and the worker serves the next one');

is $t->get('/static')->{status}, 200, 'static content throughout';
is_deeply [$t->worker_pids], [$worker], 'the same worker throughout: nothing crashed';
unlike $t->error_log, qr/\[(alert|crit|emerg)\]/, 'no alert in the error log';

$t->stop_nginx;
unlike $t->error_log, qr/open socket|\[alert\]/, 'nginx stopped without an open socket left';
$relay->stop;

done_testing;
