#!/usr/bin/perl
# The MongoDB breaker under ingest traffic alone: an ingest's cache update
# only skips an open breaker (it claims no probe), so once the open interval
# is over its failures must open the breaker again. Otherwise every ingest
# pays the MongoDB budget for as long as MongoDB is down. Budgets are left at
# their defaults.

use strict;
use warnings;

use Test::More;
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid body_both wait_until);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
plan skip_all => 'freezes MongoDB: not with an external server' unless $t->mongo_controllable;

$t->start_nginx(body_both(http => "
    bytemark_breaker failures=2 open=1s;
    server {
        listen 127.0.0.1:%%PORT2%%;
        location ~ ^/users/([^/]*)/passes\$ {
            bytemark_user_id \$1;
            bytemark_ingest;
        }
    }"), workers => 1);

my $ua = HTTP::Tiny->new(timeout => 30);
my $n = 0;

# one ingest of a new pass; its status and how long it took
sub ingest {
    $n++;
    my $t0 = time;
    my $r = $ua->request('POST', 'http://127.0.0.1:' . $t->port2 . '/users/7/passes',
                         { content => qq({"pass_uuid": "@{[uuid(1000 + $n)]}", "status": "s$n"}),
                           headers => { 'Content-Type' => 'application/json' } });
    return ($r->{status}, time - $t0);
}

my ($status) = ingest();
is $status, 200, 'MongoDB up: the ingest is answered';

$t->pause_mongo;

ok wait_until(sub { ingest(); $t->error_log =~ /circuit breaker for mongo opened/ }, 20),
    'MongoDB frozen: the ingests\' cache updates open the breaker';

# ingests only, for 5 s: the open interval ends 4 times or more meanwhile
my ($fast, $slow, $bad) = (0, 0, 0);
my $end = time + 5;
while (time < $end) {
    my ($s, $took) = ingest();
    $bad++ if $s != 200;
    if ($took >= 0.25) { $slow++ } else { $fast++ }
}
is $bad, 0, 'every ingest is acknowledged (MySQL committed, the user noted)';
ok $fast > 2 * $slow,
    "most ingests skip the frozen MongoDB ($fast at once, $slow paid the budget)";

$t->resume_mongo;
ok wait_until(sub { (ingest())[1] < 0.25 && $t->error_log =~ /circuit breaker for mongo closed/ }, 20),
    'MongoDB back: a cache update closes the breaker';

done_testing;
