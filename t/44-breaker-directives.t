#!/usr/bin/perl
# The fault thresholds as directives (README: Circuit breaker, Stuck calls):
# bytemark_breaker failures=<n> open=<time> and bytemark_stuck_calls <n>, at
# values other than the defaults (5 failures, 2 s open, 2 stuck calls), so
# that a constant left in the code would show.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry body_both wait_until);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$t->start_nginx(body_both(http => "bytemark_breaker failures=3 open=1500ms;\nbytemark_stuck_calls 8;\n",
                          loc => 'bytemark_mongo_timeout 300ms; bytemark_cache_fill off;'));

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }
sub timed { my $t0 = time; my $r = $t->get($_[0]); return ($r, time - $t0) }

add_pass($t, user => 1, uuid => uuid(1), status => 'db');
$t->mongo_insert(cache_entry(1, passes => [{ pass_uuid => uuid(1), status => 'cached' }]));
is src($t->get('/t?user_id=1')), 'mongo', 'MongoDB answers';

$t->pause_mongo;
my @s;
for (1 .. 6) {
    my ($r, $s) = timed('/t?user_id=1');
    is src($r), 'mysql', "MongoDB frozen, lookup $_: answered by MySQL";
    push @s, $s;
}
my $times = join ' ', map { sprintf '%.2f', $_ } @s;
# stuck_calls 8: the three abandoned calls still in the driver do not yet
# skip MongoDB (with the default 2, the third lookup would be at once)
ok +(grep { $_ >= 0.25 } @s[0 .. 2]) == 3, "the first three pay the MongoDB budget ($times)";
ok +(grep { $_ < 0.2 } @s[3 .. 5]) == 3, "then the breaker is open: at once ($times)";
like $t->error_log, qr/circuit breaker for mongo opened after 3 consecutive failures; calls skip it, with a probe every 1500 ms/,
    'it opened after failures=3, for open=1500ms';

$t->resume_mongo;
my $t0 = time;
ok wait_until(sub { src($t->get('/t?user_id=1')) eq 'mongo' }, 10), 'a probe finds MongoDB again';
my $took = time - $t0;
ok $took < 6, sprintf 'within the open interval and the driver\'s own timeouts (%.1fs)', $took;

$t->stop_nginx;
done_testing;
