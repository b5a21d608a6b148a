#!/usr/bin/perl
# The MySQL transaction of an ingest when something fails in it (issue 24,
# item 6; SPEC 3.3):
#   - a ROLLBACK that fails: the connection is closed (the server rolls the
#     transaction back), never "SET autocommit=1", which would commit it;
#   - a budget spent before the COMMIT was sent: 503 "nothing was written",
#     and it stays true: statements that answer late do not go on to commit;
#   - a budget spent while the COMMIT is in flight: 503 saying the outcome is
#     unknown and the write can be retried (it is idempotent).
# MySQL is reached through Bytemark::MysqlFault, which fails or stalls the
# chosen statement; the budget is the location's, as operators set it.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass wait_until);
use Bytemark::MysqlFault;

my $t = Bytemark::Test->new(mysql => 1);
my $relay = Bytemark::MysqlFault->start($t, to => $t->mysql_port);
my $port = $relay->port;

$t->start_nginx("
bytemark_mysql host=127.0.0.1 port=$port user=" . $t->mysql_user . ' password='
    . $t->mysql_password . ' database=' . $t->mysql_db . " pool_size=1;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /ingest {
        bytemark_user_id \$arg_user_id;
        bytemark_mysql_timeout 400ms;
        bytemark_ingest;
    }
}
");

add_pass($t, user => 9, uuid => uuid(9), status => 'other');

sub ingest {
    my ($user, @passes) = @_;
    my $r = $t->http(POST => "/ingest?user_id=$user", { 'Content-Type' => 'application/json' },
                     [ map { { pass_uuid => $_, status => 'active' } } @passes ]);
    $r->{message} = eval { $t->json($r)->{message} } // '';
    return $r;
}

sub rows {
    my ($u) = @_;
    return $t->sql("SELECT COUNT(*) FROM bytemark_pass WHERE pass_uuid = '$u'")->[0][0];
}

sub last_fault {
    my @f = grep { $_->[0] eq 'fault' } $relay->events;
    return @f ? $f[-1][1] : 0;
}

my $r = ingest(6, uuid(60));
is $r->{status}, 200, 'baseline: an ingest through the relay' or diag $r->{content};
is $relay->count('accept'), 1, 'one connection';

# --- a ROLLBACK that fails ---------------------------------------------------------

# a new pass, then one of another user: 409, the first one rolled back
$relay->mode('fail-rollback');
$r = ingest(6, uuid(61), uuid(9));
is $r->{status}, 409, 'a pass of another user: 409' or diag $r->{content};
my $n = last_fault();
ok $n, "the relay refused the ROLLBACK on connection #$n";
ok wait_until(sub { grep { $_ == $n } $relay->closed_by_client }, 15),
    'the connection whose ROLLBACK failed is closed';
is rows(uuid(61)), 0, 'nothing of the failed transaction was committed';
sleep 0.5;
is rows(uuid(61)), 0, '... not even later';
like $t->error_log, qr/\[warn\] .*bytemark: mysql rollback on server #1 failed: .*the connection is closed/,
    'the failed rollback is logged';

my $accepts = $relay->count('accept');
$r = ingest(6, uuid(62));
is $r->{status}, 200, 'the next ingest succeeds' or diag $r->{content};
is $relay->count('accept'), $accepts + 1, 'on a new connection: the closed one was not reused';

# --- the budget spent before the COMMIT was sent -----------------------------------

# MySQL frozen: the transaction's first statement waits; the 503 comes at
# 400 ms; MySQL answers at 700 ms, well before the library's own timeout
$t->pause_mysql;
my $t0 = time;
$r = ingest(6, uuid(63));
my $took = time - $t0;
sleep 0.7 - (time - $t0) if time - $t0 < 0.7;
$t->resume_mysql;
is $r->{status}, 503, 'MySQL frozen: 503';
ok $took < 1.5, sprintf('within the budget and a margin (%.2f s)', $took);
like $r->{message}, qr/nothing was written/, 'the message says nothing was written';
unlike $r->{message}, qr/unknown/, 'and not that the outcome is unknown';
sleep 1.5;
is rows(uuid(63)), 0, 'and nothing is: the late statements are rolled back, not committed';
$r = ingest(6, uuid(64));
is $r->{status}, 200, 'the next ingest succeeds' or diag $r->{content};

# --- the budget spent while the COMMIT is in flight --------------------------------

$relay->mode('stall-commit');
$r = ingest(6, uuid(65));
is $r->{status}, 503, 'COMMIT unanswered: 503';
like $r->{message}, qr/outcome is unknown/, 'the message says the outcome is unknown';
like $r->{message}, qr/retry/, '... and that the write can be retried';
unlike $r->{message}, qr/nothing was written/, 'it does not claim nothing was written';
ok wait_until(sub { rows(uuid(65)) == 1 }, 5), 'the server did commit it: the claim would have been false';
$n = last_fault();
ok wait_until(sub { grep { $_ == $n } $relay->closed_by_client }, 10),
    'the connection whose COMMIT got no answer is closed';
$r = ingest(6, uuid(65));
is $r->{status}, 200, 'the retry succeeds (idempotent)' or diag $r->{content};
is rows(uuid(65)), 1, 'one row';

$t->stop_nginx;
unlike $t->error_log, qr/\[(alert|emerg)\]/, 'no alert in the error log';
$relay->stop;

done_testing;
