#!/usr/bin/perl
# Named backends (issue 26, section 1): "bytemark_upstream <name> { }" blocks
# and "bytemark_backend <name>;". Two tenants, each on its own MariaDB and
# MongoDB, served by one nginx: each sees only its own data for the same
# user id, ingest and purge touch only their own databases, one tenant's
# MariaDB down leaves the other answering, budgets set in a block apply,
# nginx -t names what is wrong, reloads add and remove backends.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry wait_until);

my $a = Bytemark::Test->new(mysql => 1, mongo => 1);
my $b = Bytemark::Test->new(mysql => 1, mongo => 1);

my $A_URI   = $a->mongo_uri;
my $B_URI   = $b->mongo_uri;
my $A_MYSQL = $a->mysql_directive;
my $B_MYSQL = $b->mysql_directive;
my $COLL    = $a->mongo_db . '.' . $a->mongo_coll;

# Tenant A: block form, its server uses it for every location. Tenant B:
# its block sets the budget of its locations (over the http level's); one
# location sets its own.
# The unnamed default backend (http level) is B's MariaDB alone.
my $blocks = "
    bytemark_mysql $B_MYSQL;
    bytemark_mongo_timeout 250ms;

    bytemark_microcache zone=mc:1m ttl=30s;

    bytemark_upstream tenant_a {
        bytemark_mongo_uri $A_URI;
        bytemark_mongo_collection $COLL;
        bytemark_mysql $A_MYSQL;
        bytemark_breaker failures=2 open=1s;
    }

    bytemark_upstream tenant_b {
        bytemark_mongo_uri $B_URI;
        bytemark_mongo_collection $COLL;
        bytemark_mysql $B_MYSQL;
        bytemark_mongo_timeout 1500ms;
    }
";

my $server_a = '
    server {
        listen 127.0.0.1:%%PORT%%;
        bytemark_backend tenant_a;
        add_header X-Backend $bytemark_backend always;
        bytemark_user_id $arg_user_id;
        location = /t { bytemark_microcache off; bytemark_tickets; }
        location = /mc { bytemark_tickets; }
        location = /pass { bytemark_pass_uuid $arg_uuid; bytemark_pass; }
        location = /ingest { bytemark_ingest; }
        location = /purge { bytemark_purge; }
    }
';

my $server_b = '
    server {
        listen 127.0.0.1:%%PORT2%%;
        add_header X-Backend $bytemark_backend always;
        bytemark_user_id $arg_user_id;
        location = /t { bytemark_backend tenant_b; bytemark_microcache off; bytemark_tickets; }
        location = /mc { bytemark_backend tenant_b; bytemark_tickets; }
        location = /fast { bytemark_backend tenant_b; bytemark_mongo_timeout 100ms; bytemark_microcache off; bytemark_tickets; }
        location = /ingest { bytemark_backend tenant_b; bytemark_ingest; }
        location = /purge { bytemark_backend tenant_b; bytemark_purge; }
        location = /default { bytemark_microcache off; bytemark_tickets; }
        location = /status { bytemark_status; }
    }
';

$a->start_nginx($blocks . $server_a . $server_b);
$b->{nginx_port} = $a->port2;    # $b->get() asks the second server

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }
sub backend { $_[0]{headers}{'x-backend'} // '' }
sub statuses {
    my ($t, $r) = @_;
    my $j = eval { $t->json($r) } or return 'not json: ' . ($r->{content} // '');
    return join ',', map { $_->{status} } @{ $j->{passes} // [] };
}

# The same user id in both tenants, with different passes.
add_pass($a, user => 7, uuid => uuid(1), status => 'a-db');
add_pass($b, user => 7, uuid => uuid(2), status => 'b-db');
$a->mongo_insert([cache_entry(7, passes => [{ pass_uuid => uuid(1), status => 'a-cached' }])]);
$b->mongo_insert([cache_entry(7, passes => [{ pass_uuid => uuid(2), status => 'b-cached' }])]);
$_->mongo_index_unique('user_id') for $a, $b;

# --- each tenant sees its own data

my $r = $a->get('/t?user_id=7');
is_deeply [$r->{status}, src($r), statuses($a, $r), backend($r)], [200, 'mongo', 'a-cached', 'tenant_a'],
    'tenant A: its own cache entry ($bytemark_backend tenant_a)';
$r = $b->get('/t?user_id=7');
is_deeply [$r->{status}, src($r), statuses($b, $r), backend($r)], [200, 'mongo', 'b-cached', 'tenant_b'],
    'tenant B, same user id: its own cache entry';
$r = $b->get('/default?user_id=7');
is_deeply [$r->{status}, src($r), statuses($b, $r), backend($r)], [200, 'mysql', 'b-db', 'default'],
    'the unnamed backend beside them: http-level MySQL, $bytemark_backend "default"';

$r = $a->get('/pass?user_id=7&uuid=' . uuid(2));
is $r->{status}, 404, "tenant A does not see tenant B's pass";
$r = $a->get('/pass?user_id=7&uuid=' . uuid(1));
is $r->{status}, 200, 'tenant A sees its own pass';

# the micro-cache (one zone for both): the key includes the backend
$r = $a->get('/mc?user_id=7');
is statuses($a, $r), 'a-cached', 'micro-cache, tenant A first';
$r = $b->get('/mc?user_id=7');
is statuses($b, $r), 'b-cached', "micro-cache: tenant B is not served tenant A's answer";
$r = $a->get('/mc?user_id=7');
is_deeply [statuses($a, $r), $r->{headers}{'x-bytemark-source'} ? 1 : 0], ['a-cached', 1],
    'micro-cache: tenant A again';

# --- ingest through one tenant lands only in its databases

my $pass = { pass_uuid => uuid(3), status => 'a-new' };
$r = $a->http('POST', '/ingest?user_id=8', { 'Content-Type' => 'application/json' }, $pass);
is $r->{status}, 200, 'ingest through tenant A: 200';
is $a->sql("SELECT COUNT(*) FROM bytemark_pass WHERE pass_uuid = '" . uuid(3) . "'")->[0][0], 1,
    "the row is in tenant A's MariaDB";
is $b->sql("SELECT COUNT(*) FROM bytemark_pass WHERE pass_uuid = '" . uuid(3) . "'")->[0][0], 0,
    "and not in tenant B's";
ok wait_until(sub { $a->mongo_count({ user_id => 8 }) }), "the cache entry is in tenant A's MongoDB";
is $b->mongo_count({ user_id => 8 }), 0, "and not in tenant B's";

# --- purge through one tenant leaves the other

$r = $b->http('DELETE', '/purge?user_id=7');
is $r->{status}, 204, 'purge through tenant B: 204';
is $b->mongo_count({ user_id => 7 }), 0, "tenant B's entry is gone";
is $a->mongo_count({ user_id => 7 }), 1, "tenant A's entry of the same user stays";
$r = $a->get('/t?user_id=7');
is_deeply [src($r), statuses($a, $r)], ['mongo', 'a-cached'], 'tenant A still answers from its cache';
$r = $b->get('/t?user_id=7');
is_deeply [src($r), statuses($b, $r)], ['mysql', 'b-db'], 'tenant B answers from its MySQL';
ok wait_until(sub { $b->mongo_count({ user_id => 7 }) }), "tenant B's fill went to tenant B's MongoDB";
$r = $b->get('/mc?user_id=7');
is statuses($b, $r), 'b-db', "the purge dropped tenant B's micro-cached answer too";

# --- a budget set in the block: B's MongoDB stopped

add_pass($b, user => 9, uuid => uuid(4), status => 'b-nine');
$b->pause_mongo;
my $t0 = time;
$r = $b->get('/t?user_id=9');
my $slow = time - $t0;
$t0 = time;
my $r2 = $b->get('/fast?user_id=9');
my $fast = time - $t0;
$b->resume_mongo;
is_deeply [$r->{status}, src($r), statuses($b, $r)], [200, 'mysql', 'b-nine'],
    'B with its MongoDB stopped: MySQL answers';
cmp_ok $slow, '>=', 1.4,
    "the block's bytemark_mongo_timeout 1500ms is the location's budget, not the http level's 250ms (${slow}s)";
cmp_ok $slow, '<', 5, '... and no more';
is_deeply [$r2->{status}, src($r2)], [200, 'mysql'], 'a location with its own budget: MySQL answers';
cmp_ok $fast, '<', 1.0, "the location's own bytemark_mongo_timeout 100ms wins (${fast}s)";

# --- tenant A's MongoDB stopped: A's breaker opens, B's cache still answers

$a->pause_mongo;
for my $i (1 .. 3) {
    $r = $a->get('/t?user_id=7');
    is_deeply [$r->{status}, src($r), statuses($a, $r)], [200, 'mysql', 'a-db'],
        "tenant A, its MongoDB stopped: its MySQL answers ($i)";
}
like $a->error_log, qr/circuit breaker for mongo of bytemark_upstream "tenant_a" opened/,
    "tenant A's MongoDB breaker opened, and the log names the backend";
$r = $b->get('/t?user_id=7');
is_deeply [$r->{status}, src($r)], [200, 'mongo'], "tenant B's MongoDB still answers: its breaker is its own";

# an ingest whose cache update fails: the note is tenant A's alone
$r = $a->http('POST', '/ingest?user_id=7', { 'Content-Type' => 'application/json' },
              { pass_uuid => uuid(6), status => 'a-written' });
is $r->{status}, 200, 'ingest through tenant A, its MongoDB stopped: 200';
$r = $b->get('/t?user_id=7');
is_deeply [src($r), statuses($b, $r)], ['mongo', 'b-db'],
    "tenant A's note does not keep tenant B's entry of the same user from lookups";
$a->resume_mongo;
$r = $a->get('/t?user_id=7');
is_deeply [$r->{status}, statuses($a, $r)], [200, 'a-db,a-written'],
    "tenant A's own lookups skip its stale entry: the acknowledged pass is there";
ok wait_until(sub {
        my $x = $a->get('/t?user_id=7');
        src($x) eq 'mongo' && statuses($a, $x) eq 'a-db,a-written';
    }, 15),
    "tenant A's breaker closes and its cache answers again, with the new pass";

# --- tenant A's MariaDB down: A fails, B keeps answering

add_pass($b, user => 10, uuid => uuid(5), status => 'b-ten');
$a->stop_mysql;
for my $i (1 .. 4) {
    $r = $a->get("/t?user_id=1$i");
    is $r->{status}, 503, "tenant A, MariaDB down, uncached user: 503 ($i)";
}
$r = $a->get('/t?user_id=7');
is_deeply [$r->{status}, src($r)], [200, 'mongo'], 'tenant A, cached user: still its MongoDB';
for my $i (1 .. 3) {
    $r = $b->get('/t?user_id=10');
    is_deeply [$r->{status}, statuses($b, $r)], [200, 'b-ten'],
        "tenant B keeps answering, from its own pools and breakers ($i)";
    $b->mongo_delete({ user_id => 10 });
}
unlike $a->error_log, qr/circuit breaker for \S+ \S+ of bytemark_upstream "tenant_b" opened/,
    "tenant B's breakers stayed closed";

# --- nginx -t names what is wrong

my $base = "bytemark_upstream u { bytemark_mysql $B_MYSQL; }\n";
sub srv { 'server { listen 127.0.0.1:%%PORT%%; location /t { bytemark_user_id $arg_u; ' . $_[0] . ' } }' }
my @bad = (
    [ $base . $base . srv('bytemark_tickets;'),
      qr/duplicate "bytemark_upstream" "u"/, 'a duplicate name' ],
    [ $base . srv('bytemark_backend nope; bytemark_tickets;'),
      qr/"bytemark_backend" "nope": no "bytemark_upstream nope" is defined/, 'an unknown name' ],
    [ "bytemark_upstream u { bytemark_mysql $B_MYSQL; bytemark_tickets; }\n" . srv(''),
      qr/"bytemark_tickets" directive is not allowed in "bytemark_upstream"/,
      'a location directive inside the block' ],
    [ "bytemark_upstream u { bytemark_mysql $B_MYSQL; bytemark_cache_ttl 1s; }\n" . srv(''),
      qr/"bytemark_cache_ttl" directive is not allowed in "bytemark_upstream"/,
      'a per-location setting inside the block' ],
    [ "server { listen 127.0.0.1:%%PORT%%; bytemark_upstream u { bytemark_mysql $B_MYSQL; } }",
      qr/"bytemark_upstream" directive is not allowed here/, 'a block inside server{}' ],
    [ "bytemark_upstream u { }\n" . srv(''),
      qr/"bytemark_upstream" "u" has neither "bytemark_mongo_uri" nor "bytemark_mysql"/,
      'an empty block' ],
    [ "bytemark_upstream default { bytemark_mysql $B_MYSQL; }\n" . srv(''),
      qr/cannot be named "default"/, 'the reserved name' ],
    [ "bytemark_upstream u { bytemark_mongo_uri $B_URI; }\n"
      . srv('bytemark_backend u; bytemark_ingest;'),
      qr/"bytemark_ingest" in location "\/t" uses bytemark_upstream "u", which needs "bytemark_mysql"/,
      "a handler without what it needs, in the backend it uses" ],
    [ "bytemark_upstream u { bytemark_mysql $B_MYSQL; bytemark_breaker failures=0; }\n" . srv(''),
      qr/"bytemark_breaker" has an invalid parameter "failures=0"/, "a directive's own check, in the block" ],
    [ "bytemark_upstream u { bytemark_mysql_table; }\n" . srv(''),
      qr/invalid number of arguments in "bytemark_mysql_table" directive/, 'an argument count' ],
);
for my $c (@bad) {
    my ($rc, $out) = $a->nginx_test($c->[0]);
    ok $rc != 0 && $out =~ $c->[1], "nginx -t refuses $c->[2]" or diag $out;
}
open my $inc, '>', $a->dir . '/tenant_u.conf' or die $!;
print $inc "bytemark_mysql $B_MYSQL;\nbytemark_mysql_table bytemark_pass;\n";
close $inc;
my ($rc, $out) = $a->nginx_test("bytemark_upstream u { include " . $a->dir . "/tenant_u.conf; }\n"
                                . srv('bytemark_backend u; bytemark_ingest;'));
is $rc, 0, 'nginx -t takes a block that includes its directives from a file' or diag $out;
($rc, $out) = $a->nginx_test("bytemark_upstream u { bytemark_mysql $B_MYSQL; bytemark_mysql_timeout 2s; "
                                . "bytemark_cache_cleanup off; bytemark_stuck_calls 3; }\n"
                                . srv('bytemark_backend u; bytemark_tickets;'));
is $rc, 0, 'nginx -t takes a block with budgets and tuning' or diag $out;

# --- reload: a backend added, then one removed

$a->start_mysql;
my $server_c = '
    server {
        listen 127.0.0.1:%%PORT%%;
        bytemark_user_id $arg_user_id;
        location = /c { bytemark_backend tenant_c; bytemark_microcache off; bytemark_tickets; }
    }
';
(my $blocks_c = $blocks) =~ s/(bytemark_upstream tenant_b)/
    bytemark_upstream tenant_c {
        bytemark_mongo_uri $A_URI;
        bytemark_mongo_collection cache.tenant_c;
        bytemark_cache_cleanup interval=1s max_age=1h;
    }

    $1/;
# old entries in tenant C's collection and in tenant A's (same MongoDB)
my $old = Bytemark::Data::now_ms() - 2 * 3600 * 1000;
$a->mongo_insert([cache_entry(51, ts => $old)]);
{
    local $a->{mongo_coll_name} = 'tenant_c';
    $a->mongo_insert([cache_entry(50, ts => $old)]);
}
$a->reload_nginx($blocks_c . $server_c . $server_b);
{
    local $a->{mongo_coll_name} = 'tenant_c';
    ok wait_until(sub { $a->mongo_count({ user_id => 50 }) == 0 }, 15),
        "tenant C's bytemark_cache_cleanup swept its own collection";
}
is $a->mongo_count({ user_id => 51 }), 1, "and not tenant A's, on the same MongoDB";
$r = $a->get('/c?user_id=7');
is_deeply [$r->{status}, src($r), statuses($a, $r)], [200, 'mongo', ''],
    'reload, backend added: tenant C (MongoDB only, another collection) answers';
$r = $b->get('/t?user_id=7');
is_deeply [$r->{status}, statuses($b, $r)], [200, 'b-db'], '... and tenant B still does';

(my $blocks_no_b = $blocks_c) =~ s/bytemark_upstream tenant_b \{.*?\}//s;
(my $server_b2 = $server_b) =~ s/location = \/(t|mc|fast|ingest|purge) \{[^}]*\}//g;
$a->reload_nginx($blocks_no_b . $server_c . $server_b2);
$r = $a->get('/c?user_id=7');
is $r->{status}, 200, 'reload, backend removed: tenant C answers';
$r = $b->get('/default?user_id=7');
is_deeply [$r->{status}, src($r), backend($r)], [200, 'mysql', 'default'], '... and the default backend';
$r = $b->get('/t?user_id=7');
is $r->{status}, 404, "tenant B's locations are gone";
# named backends only: no http-level one
$a->reload_nginx("bytemark_upstream only_a { bytemark_mysql $A_MYSQL; }\n" . '
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_backend only_a; bytemark_user_id $arg_user_id; bytemark_tickets; }
        location = /status { bytemark_status; }
    }');
$r = $a->get('/t?user_id=7');
is_deeply [$r->{status}, src($r), statuses($a, $r)], [200, 'mysql', 'a-db,a-written'],
    'named backends only, no http-level one: the location answers';
$r = $a->get('/status');
is_deeply [$r->{status}, ($a->json($r)->{bytemark_requests_total}{tickets}{200} // 0) > 0 ? 1 : 0], [200, 1],
    '... and the status page answers (the metrics zone exists without an http-level backend)';

unlike $a->error_log, qr/\[(alert|emerg)\]|exited on signal|leak/, 'no alert, crash or leak in the error log';

done_testing;
