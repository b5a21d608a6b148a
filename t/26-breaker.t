#!/usr/bin/perl
# The circuit breaker: after repeated failures a backend is skipped (the
# fallback answers at once instead of paying the backend's budget), then
# probed again; each change of state is logged once, not per request.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry body_both wait_until now_ms);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$t->start_nginx(body_both(loc => 'bytemark_mongo_timeout 400ms; bytemark_mysql_timeout 800ms; '
                                 . 'bytemark_cache_ttl 10s; bytemark_cache_fill off;'),
                workers => 2);

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

sub timed {
    my ($path) = @_;
    my $t0 = time;
    my $r = $t->get($path);
    return ($r, time - $t0);
}

sub count { my ($re) = @_; my @m = $t->error_log =~ /$re/g; scalar @m }

add_pass($t, user => 1, uuid => uuid(1), status => 'db');
$t->mongo_insert(cache_entry(1, passes => [{ pass_uuid => uuid(1), status => 'cached' }]));
$t->mongo_insert(cache_entry(2, ts => now_ms() - 60_000, passes => [{ pass_uuid => uuid(2), status => 'old' }]));
is src($t->get('/t?user_id=1')), 'mongo', 'MongoDB answers';

# --- MongoDB frozen ------------------------------------------------------------------------

$t->pause_mongo;
my @slow;
for (1 .. 5) {
    my ($r, $s) = timed('/t?user_id=1');
    is src($r), 'mysql', "failure $_: answered by MySQL";
    push @slow, $s;
}
ok $slow[0] >= 0.35, 'the first failure pays the MongoDB budget (' . join(' ', map { sprintf '%.2f', $_ } @slow) . ')';
like $t->error_log, qr/circuit breaker for mongo opened after \d+ consecutive failures/, 'opening is logged';

my @fast;
for (1 .. 10) {
    my ($r, $s) = timed('/t?user_id=1');
    push @fast, $s if src($r) eq 'mysql';
}
is scalar(@fast), 10, 'while open: every lookup is answered by MySQL';
ok((grep { $_ < 0.2 } @fast) >= 9, 'at once, without the MongoDB budget (' . join(' ', map { sprintf '%.2f', $_ } @fast) . ')');
is count(qr/circuit breaker for mongo opened/), 1, 'logged once, not per request';

# --- MongoDB back: a probe closes it ---------------------------------------------------------

$t->resume_mongo;
ok wait_until(sub { src($t->get('/t?user_id=1')) eq 'mongo' }, 15), 'after the open interval a probe finds MongoDB again';
like $t->error_log, qr/circuit breaker for mongo closed/, 'closing is logged';
is count(qr/circuit breaker for mongo closed/), 1, 'once';
is src($t->get('/t?user_id=1')), 'mongo', 'and MongoDB answers again';

# --- MySQL frozen: the stale entry answers at once ----------------------------------------------

$t->pause_mysql;
my @stale;
for (1 .. 12) {
    my ($r, $s) = timed('/t?user_id=2');
    push @stale, $s if $r->{status} == 200 && src($r) eq 'stale';
}
is scalar(@stale), 12, 'MySQL frozen: the stale entry answers';
ok $stale[0] >= 0.7 && (grep { $_ < 0.2 } @stale[-4 .. -1]) == 4,
   'the first pays the MySQL budget, then the stale entry answers at once ('
   . join(' ', map { sprintf '%.2f', $_ } @stale) . ')';
ok wait_until(sub { $t->error_log =~ /circuit breaker for mysql server #1 opened/ }, 10), 'the MySQL breaker opened';
$t->resume_mysql;
ok wait_until(sub { my $r = $t->get('/t?user_id=2'); src($r) eq 'mysql' }, 20), 'MySQL is used again once back';
ok wait_until(sub { $t->error_log =~ /circuit breaker for mysql server #1 closed/ }, 5), 'and its breaker closed';
is count(qr/circuit breaker for mysql server #1 opened/), 1, 'opened once';

done_testing;
