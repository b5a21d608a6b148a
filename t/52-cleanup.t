#!/usr/bin/perl
# bytemark_cache_cleanup: one worker at a time deletes entries older than
# max_age, on the thread pool, logging how many; young entries stay; a
# reload neither runs it twice in parallel nor more often than the interval.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(cache_entry wait_until now_ms);

my $t = Bytemark::Test->new(mongo => 1);
my $body = "bytemark_mongo_uri %%MONGO_URI%%;
            bytemark_mongo_collection %%MONGO_COLL%%;
            bytemark_cache_cleanup interval=2s max_age=1h;
            server { listen 127.0.0.1:%%PORT%%; location / { return 200; }
                     location = /status { bytemark_status; } }";

$t->mongo_insert([
    cache_entry(1, ts => now_ms() - 2 * 3600_000),
    cache_entry(2, ts => now_ms() - 3601_000),
    cache_entry(3, ts => now_ms() - 600_000),
    cache_entry(4, ts => now_ms()),
]);

$t->start_nginx($body, workers => 2);
ok wait_until(sub { $t->mongo_count({}) == 2 }, 10), 'the old entries are deleted';
is_deeply [sort map { $t->plain($_->{user_id}) } $t->mongo_find({})], [3, 4], 'the young ones stay';
like $t->error_log, qr/bytemark: cache cleanup deleted 2 entries older than 3600000 ms/, 'the run is logged with its count';

# runs keep their interval across two workers and a reload
sleep 3;
$t->reload_nginx;
sleep 4.5;
my @runs = $t->error_log =~ /cache cleanup deleted (\d+) entries/g;
my $n = scalar @runs;
ok $n >= 3 && $n <= 6, "one run per 2s interval across 2 workers and a reload ($n runs in ~8s)";
is((grep { $_ != 0 } @runs), 1, 'only the first run found something to delete');
my $s = $t->json($t->get('/status'));
ok $s->{bytemark_cache_cleanup_runs_total} >= $n, "bytemark_cache_cleanup_runs_total counts the runs ($s->{bytemark_cache_cleanup_runs_total})";
is $s->{bytemark_cache_cleanup_deleted_total}, 2, 'bytemark_cache_cleanup_deleted_total counts the deleted entries';

my @starts = map { /^(\d\d\d\d\/\d\d\/\d\d \d\d:\d\d:\d\d)/ ? $1 : () }
             grep { /cache cleanup deleted/ } split /\n/, $t->error_log;
my %per_second;
$per_second{$_}++ for @starts;
ok !(grep { $_ > 1 } values %per_second), 'never two runs in the same second';

$t->stop_nginx;

my ($rc, $out) = $t->nginx_test('bytemark_mysql host=localhost user=u database=d;
    bytemark_cache_cleanup interval=1m max_age=30d;
    server { listen 127.0.0.1:%%PORT%%; }');
ok $rc && $out =~ /"bytemark_cache_cleanup" needs "bytemark_mongo_uri"/, 'cleanup without MongoDB is refused';
($rc, $out) = $t->nginx_test('bytemark_mongo_uri mongodb://h/; bytemark_cache_cleanup interval=1m;
    server { listen 127.0.0.1:%%PORT%%; }');
ok $rc && $out =~ /needs both "interval=" and "max_age="/, 'cleanup without max_age is refused';
($rc, $out) = $t->nginx_test('bytemark_mongo_uri mongodb://h/; bytemark_cache_cleanup interval=soon max_age=1d;
    server { listen 127.0.0.1:%%PORT%%; }');
ok $rc && $out =~ /"bytemark_cache_cleanup" has an invalid parameter "interval=soon"/, 'bad time refused';
($rc, $out) = $t->nginx_test('bytemark_mongo_uri mongodb://h/; bytemark_cache_cleanup off;
    server { listen 127.0.0.1:%%PORT%%; }');
is $rc, 0, 'bytemark_cache_cleanup off is accepted';

done_testing;
