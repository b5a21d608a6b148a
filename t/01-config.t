#!/usr/bin/perl
# nginx -t rejects each class of bad configuration with a message that names
# the directive and the problem (SPEC 4), and accepts the good ones.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;

# no servers needed: nginx -t only parses
my $t = Bytemark::Test->new();

my $mysql = 'bytemark_mysql host=127.0.0.1 port=3306 user=u password=TopSecret-1 database=portal;';
my $mongo = 'bytemark_mongo_uri "mongodb://admin:MongoPw-2@127.0.0.1:27017/?replicaSet=rs0&readPreference=secondaryPreferred";';

sub conf {
    my ($http, $loc) = @_;
    $loc //= 'bytemark_user_id $arg_user_id; bytemark_tickets;';
    return "$http\nserver { listen 127.0.0.1:%%PORT%%; location /t { $loc } }";
}

sub accepted {
    my ($body, $name) = @_;
    my ($rc, $out) = $t->nginx_test($body);
    is $rc, 0, $name or diag $out;
}

sub rejected {
    my ($body, $re, $name) = @_;
    my ($rc, $out) = $t->nginx_test($body);
    ok $rc != 0 && $out =~ $re, $name or diag "rc=$rc: $out";
    unlike $out, qr/TopSecret-1|MongoPw-2/, "$name: no secret in the message";
}

accepted(conf("$mongo $mysql"), 'both backends');
accepted(conf($mongo), 'MongoDB alone');
accepted(conf($mysql), 'MySQL alone');
accepted(conf("$mysql bytemark_mysql socket=/run/r.sock user=u database=portal pool_size=2;"),
         'a primary and a socket replica');
accepted(conf("$mongo bytemark_mongo_collection c1.tickets; bytemark_mysql_table portal.bytemark_pass;
               bytemark_thread_pool default; bytemark_cache_ttl 30s; bytemark_cache_fill off;
               bytemark_use_stale off; bytemark_mongo_timeout 250ms; bytemark_mysql_timeout 2s;"),
         'every read-path directive at http level');
accepted(conf($mongo, 'bytemark_user_id $1; bytemark_pass_uuid $arg_p; bytemark_pass;'),
         'pass handler with both values');
accepted("bytemark_mysql host=localhost user=u database=d; bytemark_user_id \$http_x_user;
          server { listen 127.0.0.1:%%PORT%%; location /a { bytemark_tickets; } }",
         'bytemark_user_id inherited from http');
{
    my ($rc, $out) = $t->nginx_test(conf("$mysql bytemark_thread_pool db;"), thread_pool => 'db threads=2');
    is $rc, 0, 'a named thread pool' or diag $out;
}

rejected(conf(''), qr/"bytemark_tickets" in location "\/t" needs "bytemark_mongo_uri" or "bytemark_mysql"/,
         'tickets without a backend');
rejected(conf('', 'bytemark_user_id $1; bytemark_pass_uuid $2; bytemark_pass;'),
         qr/"bytemark_pass" in location "\/t" needs "bytemark_mongo_uri" or "bytemark_mysql"/,
         'pass without a backend');
rejected(conf($mysql, 'bytemark_tickets;'), qr/"bytemark_tickets" in location "\/t" needs "bytemark_user_id"/,
         'tickets without bytemark_user_id');
rejected(conf($mysql, 'bytemark_user_id $arg_u; bytemark_pass;'),
         qr/"bytemark_pass" in location "\/t" needs "bytemark_pass_uuid"/, 'pass without bytemark_pass_uuid');
rejected(conf('bytemark_mongo_uri "http://127.0.0.1/";'),
         qr/"bytemark_mongo_uri" is not a valid MongoDB connection string/, 'unparsable MongoDB URI');
rejected(conf('bytemark_mongo_uri "mongodb://admin:MongoPw-2@/";'),
         qr/"bytemark_mongo_uri" is not a valid MongoDB connection string/, 'URI without a host');
rejected(conf("$mysql bytemark_mongo_timeout 5q;"), qr/"bytemark_mongo_timeout" directive invalid value/,
         'unparsable time');
rejected(conf("$mysql bytemark_cache_ttl soon;"), qr/"bytemark_cache_ttl" directive invalid value/,
         'unparsable ttl');
rejected(conf("$mysql bytemark_mysql_timeout 0;"), qr/"bytemark_mysql_timeout" must be greater than zero/,
         'zero budget');
rejected(conf($mongo, 'bytemark_user_id $1; bytemark_mongo_timeout 0s; bytemark_tickets;'),
         qr/"bytemark_mongo_timeout" must be greater than zero, not "0s" in \S+:\d+/,
         'zero budget in a location: named where it is written');
rejected(conf("$mysql bytemark_thread_pool nope;"), qr/unknown thread pool "nope"/,
         'a thread pool that does not exist');
{
    # nginx's message points at the bytemark_thread_pool line itself
    my ($rc, $out) = $t->nginx_test(conf("$mysql\n    bytemark_thread_pool nope;"));
    my @lines = split /\n/, do { local (@ARGV, $/) = ($t->dir . '/nginx-test.conf'); <> };
    my ($line) = grep { $lines[$_ - 1] =~ /bytemark_thread_pool nope/ } 1 .. @lines;
    like $out, qr/unknown thread pool "nope" in \S+nginx-test\.conf:$line\b/,
        "the unknown thread pool is reported at its directive's line ($line)";
}
accepted(conf("$mysql bytemark_breaker failures=10 open=30s; bytemark_stuck_calls 4;"), 'breaker thresholds');
accepted(conf("$mysql bytemark_breaker open=500ms;"), 'breaker: open= alone');
for my $bad ('failures=0', 'failures=1001', 'failures=x', 'open=0', 'open=soon', 'window=2s', 'failures=2 failures=3') {
    rejected(conf("$mysql bytemark_breaker $bad;"), qr/"bytemark_breaker" has an invalid parameter/,
             "bytemark_breaker $bad");
}
rejected(conf("$mysql bytemark_breaker failures=2; bytemark_breaker open=1s;"), qr/"bytemark_breaker" directive is duplicate/,
         'bytemark_breaker twice');
rejected(conf("$mysql bytemark_stuck_calls 0;"), qr/"bytemark_stuck_calls" must be a number from 1 to 1000, not "0"/,
         'bytemark_stuck_calls 0');
accepted(conf("$mongo bytemark_mongo_batch 1;"), 'bytemark_mongo_batch 1');
accepted(conf("$mongo bytemark_mongo_batch 1000;"), 'bytemark_mongo_batch 1000');
for my $bad (qw(0 1001 many)) {
    rejected(conf("$mongo bytemark_mongo_batch $bad;"),
             qr/"bytemark_mongo_batch" must be a number from 1 to 1000, not "$bad"/,
             "bytemark_mongo_batch $bad");
}
rejected(conf("$mongo bytemark_mongo_batch 8; bytemark_mongo_batch 9;"),
         qr/"bytemark_mongo_batch" directive is duplicate/, 'bytemark_mongo_batch twice');
rejected(conf("$mysql bytemark_stuck_calls many;"), qr/"bytemark_stuck_calls" must be a number from 1 to 1000, not "many"/,
         'bytemark_stuck_calls many');
rejected(conf("$mysql bytemark_thread_pool default; bytemark_thread_pool other;"),
         qr/"bytemark_thread_pool" directive is duplicate/, 'bytemark_thread_pool twice');
rejected(conf('bytemark_mysql host=localhost socket=/s user=u password=TopSecret-1 database=d;'),
         qr/"bytemark_mysql" directive needs exactly one of "host=" and "socket="/, 'host and socket');
rejected(conf('bytemark_mysql port=1 user=u password=TopSecret-1 database=d;'),
         qr/"bytemark_mysql" directive needs exactly one of "host=" and "socket="/, 'neither host nor socket');
rejected(conf('bytemark_mysql host=localhost password=TopSecret-1 database=d;'), qr/"bytemark_mysql" directive needs "user="/,
         'no user');
rejected(conf('bytemark_mysql host=localhost user=u password=TopSecret-1;'), qr/"bytemark_mysql" directive needs "database="/,
         'no database');
rejected(conf('bytemark_mysql host=localhost user=u database=d port=70000 password=TopSecret-1;'),
         qr/"bytemark_mysql" has an invalid parameter #4/, 'bad port');
rejected(conf('bytemark_mysql host=localhost user=u database=d pool_size=0;'),
         qr/"bytemark_mysql" has an invalid parameter #4/, 'bad pool size');
rejected(conf('bytemark_mysql host=localhost user=u database=d passwd=TopSecret-1;'),
         qr/"bytemark_mysql" has an invalid parameter #4/, 'unknown parameter, not echoed');
# the MySQL side never looks a name up on the event loop: nginx -t does
rejected(conf('bytemark_mysql host=no-such-host.invalid user=u database=d;'),
         qr/"bytemark_mysql" host "no-such-host.invalid": host not found/, 'a host name that does not resolve');
rejected(conf('bytemark_mysql host=127.0.0.1:3306 user=u database=d;'),
         qr/"bytemark_mysql" host "127.0.0.1:3306": give the port with "port="/, 'a port inside host=');
rejected(conf("$mongo bytemark_mongo_collection nodot;"),
         qr/"bytemark_mongo_collection" must be "<database>.<collection>"/, 'collection without a database');
rejected(conf("$mysql bytemark_mysql_table \"pass; DROP TABLE x\";"),
         qr/"bytemark_mysql_table" must be a plain identifier/, 'table name that is not an identifier');
rejected("$mysql bytemark_tickets; server { listen 127.0.0.1:%%PORT%%; }",
         qr/"bytemark_tickets" directive is not allowed here/, 'handler outside a location');
rejected(conf($mysql, 'bytemark_user_id $arg_u; bytemark_tickets; bytemark_pass;'),
         qr/"bytemark_pass" directive is duplicate, or another bytemark handler is set/, 'two handlers');
rejected(conf($mongo, 'bytemark_user_id $1; bytemark_ingest;'),
         qr/"bytemark_ingest" in location "\/t" needs "bytemark_mysql"/, 'ingest without MySQL');
rejected(conf($mysql, 'bytemark_user_id $1; bytemark_purge;'),
         qr/"bytemark_purge" in location "\/t" needs "bytemark_mongo_uri"/, 'purge without MongoDB');
rejected(conf("$mongo $mysql", 'bytemark_ingest;'),
         qr/"bytemark_ingest" in location "\/t" needs "bytemark_user_id"/, 'ingest without bytemark_user_id');
rejected(conf("$mongo $mysql", 'bytemark_purge;'),
         qr/"bytemark_purge" in location "\/t" needs "bytemark_user_id"/, 'purge without bytemark_user_id');
rejected(conf("$mongo $mysql", 'bytemark_user_id $1; bytemark_ingest_max_passes 0; bytemark_ingest;'),
         qr/"bytemark_ingest_max_passes" must be at least 1/, 'a batch limit of 0');
rejected(conf("$mongo $mysql bytemark_ingest_max_passes many;"),
         qr/"bytemark_ingest_max_passes" must be at least 1, not "many"/, 'an unparsable batch limit');
accepted(conf("$mongo $mysql bytemark_ingest_max_passes 10; bytemark_cache_cleanup interval=10m max_age=30d;",
              'bytemark_user_id $1; bytemark_ingest;'), 'ingest, cleanup and batch limit');
accepted(conf($mongo, 'bytemark_user_id $1; bytemark_purge;'), 'purge with MongoDB alone');
rejected("server { listen 127.0.0.1:%%PORT%%; location /t { bytemark_mysql host=localhost user=u database=d; } }",
         qr/"bytemark_mysql" directive is not allowed here/, 'bytemark_mysql is http-level only');

# name=value parameters (one parser): each name once, every value checked,
# the message names the directive and the parameter (never a MySQL value)
rejected(conf('bytemark_mysql host=localhost user=u user=TopSecret-1 database=d;'),
         qr/"bytemark_mysql" has an invalid parameter #3 \(.*each once\)/, 'bytemark_mysql: a name twice');
rejected(conf('bytemark_mysql host=localhost user=u database=d TopSecret-1;'),
         qr/"bytemark_mysql" has an invalid parameter #4/, 'bytemark_mysql: a value without a name');
rejected(conf('bytemark_mysql host=localhost user=u database=d port=33x6;'),
         qr/"bytemark_mysql" has an invalid parameter #4/, 'bytemark_mysql: a port that is not a number');
rejected(conf("$mongo bytemark_cache_cleanup interval=1m interval=2m;"),
         qr/"bytemark_cache_cleanup" has an invalid parameter "interval=2m"/, 'bytemark_cache_cleanup: a name twice');
rejected(conf("$mongo bytemark_cache_cleanup interval=1m max_age=0;"),
         qr/"bytemark_cache_cleanup" has an invalid parameter "max_age=0"/, 'bytemark_cache_cleanup: max_age=0');
rejected(conf("$mongo bytemark_cache_cleanup interval=1m;"),
         qr/"bytemark_cache_cleanup" directive needs both "interval=" and "max_age=", or "off"/,
         'bytemark_cache_cleanup: max_age missing');
for my $bad ('ttl=1s ttl=2s', 'ttl=1s zone=mc', 'zone=:1m ttl=1s', 'ttl=1s zone=mc:lots', 'zone=mc:1m size=2') {
    my ($param) = $bad =~ /(\S+)$/;
    $param = 'zone=mc' if $bad eq 'ttl=1s zone=mc';
    $param = 'zone=:1m' if $bad eq 'zone=:1m ttl=1s';
    rejected(conf($mysql, "bytemark_user_id \$1; bytemark_microcache $bad; bytemark_tickets;"),
             qr/"bytemark_microcache" has an invalid parameter "\Q$param\E"/, "bytemark_microcache $bad");
}
rejected(conf($mysql, 'bytemark_user_id $1; bytemark_microcache zone=mc:1m; bytemark_tickets;'),
         qr/"bytemark_microcache" directive needs "zone=<name>:<size>" and "ttl=<time>", or "off"/,
         'bytemark_microcache without ttl');
accepted(conf($mysql, 'bytemark_user_id $1; bytemark_microcache ttl=1s zone=mc:1m; bytemark_tickets;'),
         'bytemark_microcache, parameters in any order');
rejected(conf("$mongo $mysql bytemark_notes_zone size=1m;", 'bytemark_user_id $1; bytemark_notes_zone size=2m; bytemark_tickets;'),
         qr/"bytemark_notes_zone" directive is not allowed here/, 'bytemark_notes_zone is http-level only');
rejected(conf("$mongo $mysql bytemark_notes_zone size=1m; bytemark_notes_zone size=2m;"),
         qr/"bytemark_notes_zone" directive is duplicate/, 'bytemark_notes_zone twice');

done_testing;
