#!/usr/bin/perl
# bytemark_status needs no backend and no user id: nginx -t accepts it alone,
# and a status-only nginx answers with every metric at zero. It is a
# location handler like the others: one per location. Without any bytemark
# directive the module creates no zone and counts nothing.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;

my $t = Bytemark::Test->new();

my $status_only = 'server { listen 127.0.0.1:%%PORT%%; location = /status { bytemark_status; } }';

my ($rc, $out) = $t->nginx_test($status_only);
is $rc, 0, 'nginx -t: a status location without backends or user id' or diag $out;

($rc, $out) = $t->nginx_test('server { listen 127.0.0.1:%%PORT%%; location = /s { bytemark_status; bytemark_status; } }');
ok $rc != 0 && $out =~ /"bytemark_status" directive is duplicate/, 'nginx -t: twice in a location is refused'
    or diag $out;

($rc, $out) = $t->nginx_test('server { listen 127.0.0.1:%%PORT%%; location = /s { bytemark_status 1; } }');
ok $rc != 0 && $out =~ /invalid number of arguments in "bytemark_status"/, 'nginx -t: it takes no argument'
    or diag $out;

($rc, $out) = $t->nginx_test('server { listen 127.0.0.1:%%PORT%%; bytemark_status; }');
ok $rc != 0 && $out =~ /"bytemark_status" directive is not allowed here/, 'nginx -t: location context only'
    or diag $out;

$t->start_nginx($status_only, workers => 2);
my $r = $t->get('/status');
is $r->{status}, 200, 'a status-only nginx answers';
my $s = $t->json($r);
is_deeply $s->{bytemark_answers_total}, { mongo => 0, mysql => 0, stale => 0, microcache => 0 }, 'all zero';
is_deeply $s->{bytemark_pool_connections},
    { mongo => { idle => 0, busy => 0 }, mysql => { idle => 0, busy => 0 } }, 'no pools';
is_deeply $s->{bytemark_breaker_open}, { mysql => {} }, 'no breakers';
like $t->get('/status?format=prometheus')->{content}, qr/^bytemark_thread_pool_queue 0$/m, 'Prometheus too';
$t->stop_nginx;

# the module loaded but not used: no zone
$t->start_nginx('server { listen 127.0.0.1:%%PORT%%; location = /x { return 204; } }');
is $t->get('/x')->{status}, 204, 'a configuration without bytemark directives';
$t->stop_nginx;
unlike $t->error_log, qr/\[(alert|crit|emerg)\]/, 'no alerts';

done_testing;
