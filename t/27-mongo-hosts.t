#!/usr/bin/perl
# MongoDB topology (SPEC 4 bytemark_mongo_uri, issue 3):
#   - a server that goes away and comes back is used again within seconds
#     (meanwhile MySQL answers, within the budget);
#   - multi-host URIs work as the driver defines them. One live server and
#     one dead seed: as a mongos list (mongodb://live,dead/) and as a
#     replica-set seed list (?replicaSet=rs0) the live server answers. The
#     test MongoDB is a standalone, so a relay in front of it appends
#     msg: "isdbgrid" (a mongos) or setName/hosts/me (a replica-set primary)
#     to its hello replies. Two standalones in one URI are not a valid
#     topology (SDAM: a standalone found among several seeds is removed):
#     the cache is then unusable and MySQL answers, still within the budget.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry wait_until);
use Bytemark::Load qw(http_raw bson_str bson_int bson_bool bson_str_array);

my $JSON = JSON::PP->new->utf8;

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
plan skip_all => 'needs a MongoDB the test can stop' unless $t->mongo_controllable;

sub conf {
    my ($uri) = @_;
    return <<"EOF";
    bytemark_mongo_uri $uri;
    bytemark_mongo_collection %%MONGO_COLL%%;
    bytemark_mysql %%MYSQL%%;
    bytemark_mongo_timeout 2s;
    bytemark_mysql_timeout 2s;
    bytemark_cache_fill off;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
    }
EOF
}

add_pass($t, user => 1, uuid => uuid(1), status => 'db');
# a real server (FerretDB, mongod) keeps its data across a restart, the
# stand-in does not: seeding replaces whatever is there
sub seed {
    $t->mongo_delete({ user_id => 1 });
    $t->mongo_insert(cache_entry(1, passes => [{ pass_uuid => uuid(1), status => 'cached' }]));
}
seed();

# "source status" of a lookup of user 1, e.g. "mongo cached", "mysql db"
sub lookup {
    my $r = http_raw($t->nginx_port, '/t?user_id=1');
    return "$r->{status} " . ($r->{error} // $r->{body}) unless $r->{status} == 200;
    return ($r->{headers}{'x-bytemark-source'} // '') . ' '
         . ($JSON->decode($r->{body})->{passes}[0]{status} // '');
}

$t->start_nginx(conf('%%MONGO_URI%%'), workers => 2);
my @workers = sort $t->worker_pids;
is_deeply [map { lookup() } 1 .. 6], [('mongo cached') x 6], 'MongoDB up: the cache answers';

# --- MongoDB goes away and comes back -----------------------------------------------------------

$t->stop_mongo;
my $t0 = time;
my @down = map { lookup() } 1 .. 6;
is_deeply \@down, [('mysql db') x 6], 'MongoDB stopped: MySQL answers';
ok time - $t0 < 6 * 2, sprintf('each within the MongoDB budget (6 lookups in %.1f s)', time - $t0);

$t->start_mongo;    # the stand-in starts empty: the entry is written again
seed();
my $back = time;
ok wait_until(sub { lookup() eq 'mongo cached' }, 10), sprintf 'MongoDB started again: used again within %.1f s', time - $back;
is_deeply [map { lookup() } 1 .. 10], [('mongo cached') x 10], 'and by every worker from then on';
is_deeply [sort $t->worker_pids], \@workers, 'the same workers: nothing crashed';

# --- multi-host URIs ----------------------------------------------------------------------------------

my $dead = Bytemark::Test::free_port();

my $mongos = Bytemark::Load::Proxy->start($t, to => $t->mongo_port, hello => [bson_str(msg => 'isdbgrid')]);
my $uri = sprintf 'mongodb://127.0.0.1:%d,127.0.0.1:%d/', $mongos->port, $dead;
$t->reload_nginx(conf($uri));
is_deeply [map { lookup() } 1 .. 5], [('mongo cached') x 5], "mongos list with a dead member ($uri): the live one answers";

# the relay announces its own address in its hello: pick its port first
my $member = '127.0.0.1:' . Bytemark::Test::free_port();
my ($mport) = $member =~ /:(\d+)$/;
my $primary = Bytemark::Load::Proxy->start($t, to => $t->mongo_port, port => $mport, hello => [
    bson_str(setName => 'rs0'), bson_str_array(hosts => $member, "127.0.0.1:$dead"),
    bson_str(me => $member), bson_int(setVersion => 1), bson_bool(secondary => 0),
]);
$uri = "mongodb://127.0.0.1:$dead,$member/?replicaSet=rs0";
$t->reload_nginx(conf($uri));
is_deeply [map { lookup() } 1 .. 5], [('mongo cached') x 5], "replica-set seed list, first seed dead ($uri): the primary answers";

$uri = sprintf 'mongodb://127.0.0.1:%d,127.0.0.1:%d/', $t->mongo_port, $dead;
$t->reload_nginx(conf($uri));
$t0 = time;
is_deeply [map { lookup() } 1 .. 3], [('mysql db') x 3],
    "two standalones in one URI ($uri): not a topology for the driver, MySQL answers";
ok time - $t0 < 3 * 2 + 1, sprintf('within the MongoDB budget (%.1f s)', time - $t0);

ok $mongos->stop && $primary->stop, 'the relays ran throughout';
$t->stop_nginx;
unlike $t->error_log, qr/\[(alert|emerg)\]|exited on signal/, 'no alert, no crash';

done_testing;
