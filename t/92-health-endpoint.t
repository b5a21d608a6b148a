#!/usr/bin/perl
# bytemark_health (issue 26): GET/HEAD say 200 when the backend can serve
# and 503 when it cannot, with each server's state, from what the module
# already knows in shared memory: a probe costs no database round trip.
# - both backends up: 200, every server "up";
# - the MySQL primary killed (max_fails=1): after one read fails on it, it
#   is "down" and the replica "up": still 200; both MySQL servers down:
#   503; once fail_timeout is over they are "probing" (200 again, so that
#   a load balancer sends the requests that probe them); a probe that
#   fails takes them out again, silently; one that succeeds brings the
#   server back;
# - MongoDB frozen until its breaker opens: its state is "down", 503;
# - 405 with Allow for other methods; nginx -t: names other than "default"
#   are unknown, a location needs a backend; the probes count in
#   bytemark_requests_total{handler="health"}.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(wait_until);
use Bytemark::Load qw(http_raw freeze mysql_status);

my $JSON = JSON::PP->new->utf8->canonical;

# --- nginx -t -------------------------------------------------------------------------------

{
    my $c = Bytemark::Test->new();
    my $mysql = 'bytemark_mysql 127.0.0.1:3306 user=u database=portal;';
    my $srv = sub { "server { listen 127.0.0.1:%%PORT%%; location /h { $_[0] } }" };
    my ($rc, $out) = $c->nginx_test("$mysql\n" . $srv->('bytemark_health;'));
    is $rc, 0, 'bytemark_health; accepted' or diag $out;
    ($rc, $out) = $c->nginx_test("$mysql\n" . $srv->('bytemark_health default;'));
    is $rc, 0, 'bytemark_health default; accepted' or diag $out;
    ($rc, $out) = $c->nginx_test("$mysql\n" . $srv->('bytemark_health default tenant_a;'));
    ok $rc != 0 && $out =~ /no "bytemark_upstream tenant_a" is defined/,
        'an unknown backend name is refused' or diag $out;
    ($rc, $out) = $c->nginx_test($srv->('bytemark_health;'));
    ok $rc != 0 && $out =~ /"bytemark_health" in location "\/h" needs "bytemark_mongo_uri" or "bytemark_mysql"/,
        'a health location needs a backend' or diag $out;
    ($rc, $out) = $c->nginx_test("$mysql\n" . $srv->('bytemark_status; bytemark_health;'));
    ok $rc != 0 && $out =~ /"bytemark_health" directive is duplicate, or another bytemark handler is set/,
        'one handler per location' or diag $out;
}

# --- a MongoDB, a MySQL primary and a replica ---------------------------------------------------

my $t = Bytemark::Test->new(mysql => 1, mongo => 1, binlog => 1);
my $replica = Bytemark::Test->new(mysql => 1, replica_of => $t);

my $cred = join ' ', 'user=' . $t->mysql_user, 'password=' . $t->mysql_password, 'database=' . $t->mysql_db;
my $P = '127.0.0.1:' . $t->mysql_port;
my $R = '127.0.0.1:' . $replica->mysql_port;
my $uri = $t->mongo_uri;

$t->start_nginx(<<"EOF", workers => 2);
    bytemark_mongo_uri "$uri";
    bytemark_mysql $P $cred max_fails=1 fail_timeout=4s;
    bytemark_mysql host=127.0.0.1 port=${\ $replica->mysql_port} $cred max_fails=1 fail_timeout=4s;
    bytemark_breaker failures=2 open=60s;
    bytemark_mongo_timeout 300ms;
    bytemark_upstream other {
        bytemark_mysql $P $cred;
    }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; bytemark_cache_fill off; }
        location = /health { bytemark_health; }
        location = /health/default { bytemark_health default; }
        location = /health/both { bytemark_health default other; }
        location = /health/other { bytemark_backend other; bytemark_health; }
        location = /status { bytemark_status; }
    }
EOF
my $port = $t->nginx_port;

sub health {
    my ($path) = @_;
    my $r = http_raw($port, $path // '/health');
    my $j = eval { $JSON->decode($r->{body}) };
    return ($r, $j);
}

sub states {
    my $j = shift;
    my $b = $j->{backends}{default} // {};
    return join ' ', ($b->{mongo} ? "mongo=$b->{mongo}{state}" : ()),
                     map { "$_->{server}/$_->{role}=$_->{state}" } @{ $b->{mysql} // [] };
}

my ($r, $j) = health();
is $r->{status}, 200, 'all up: 200';
is $r->{headers}{'content-type'}, 'application/json', 'JSON';
is $r->{headers}{'cache-control'}, 'no-store', 'no cache keeps it';
is_deeply $j, { status => 'ok', backends => { default => {
                  mongo => { state => 'up' },
                  mysql => [ { server => $P, role => 'primary', state => 'up' },
                             { server => $R, role => 'replica', state => 'up' } ] } } },
    'every server up, named as written (addr:port, host:port)' or diag $r->{body};
($r, my $j2) = health('/health/default');
is_deeply $j2, $j, 'bytemark_health default; is the same backend';
($r, $j2) = health('/health/other');
is_deeply $j2, { status => 'ok', backends => { other => { mysql => [
                   { server => $P, role => 'primary', state => 'up' } ] } } },
    'bytemark_backend other; bytemark_health;: the location\'s backend' or diag $r->{body};
($r, $j2) = health('/health/both');
is_deeply [sort keys %{ $j2->{backends} }], ['default', 'other'], 'bytemark_health default other;: both'
    or diag $r->{body};

# no database round trip per probe: the servers see no query from it
my $q0 = mysql_status($t, 'Questions');
my $mongo_finds0 = $t->mongo_finds;
health() for 1 .. 20;
my $q1 = mysql_status($t, 'Questions');
ok $q1 - $q0 <= 2, "20 probes: no MySQL query (Questions $q0 -> $q1, the counter's own SHOW)";
is $t->mongo_finds, $mongo_finds0, '20 probes: no MongoDB find';

$r = $t->http('HEAD', '/health');
is_deeply [$r->{status}, $r->{content} // ''], [200, ''], 'HEAD: 200, no body';
$r = http_raw($port, '/health', method => 'POST', body => '');
is $r->{status}, 405, 'POST 405';
is $r->{headers}{allow}, 'GET, HEAD', 'Allow: GET, HEAD';

# --- the primary killed: down after one failed read, the replica serves ---------------------

$t->stop_mysql(fast => 1);
my $t_down = time;
$r = http_raw($port, '/t?user_id=1');
is $r->{status}, 200, 'a read with the primary killed: 200 (the replica)';
($r, $j) = health();
is $r->{status}, 200, 'primary down, replica up: 200';
is states($j), "mongo=up $P/primary=down $R/replica=up", 'the primary "down", the others up';

$replica->stop_mysql(fast => 1);
$r = http_raw($port, '/t?user_id=2');
is $r->{status}, 503, 'both MySQL servers down: the read is 503';
($r, $j) = health();
is $r->{status}, 503, 'no MySQL server can serve: 503';
is_deeply [sort keys %$j], ['error', 'message'], 'the 503 body is an error body: error and message only';
is $j->{error}, 'unavailable', 'error "unavailable"';
is $j->{message}, 'not every backend can serve: default: mongo up, mysql primary down, replica 1 down',
    'the message gives each server\'s state, by role, no address';
unlike $r->{body}, qr/127\.0\.0\.1|\Q$P\E/, 'no address in the error body';
is +(health('/health/other'))[0]{status}, 200, 'the other backend (its own state, no read failed there): 200';
($r, $j) = health('/health/both');
is $r->{status}, 503, 'both backends asked: 503';
like $j->{message}, qr/replica 1 down; other: mysql primary up$/, 'the message names each backend';

ok wait_until(sub { (health())[0]{status} == 200 }, 10), 'after fail_timeout: 200 again';
ok time - $t_down >= 4 - 0.5, sprintf('not before fail_timeout (%.1f s)', time - $t_down);
ok wait_until(sub { states((health())[1]) eq "mongo=up $P/primary=probing $R/replica=probing" }, 10),
    'the servers are "probing": the next reads probe them';

# a probe that fails: out for another fail_timeout, and nothing logged
$r = http_raw($port, '/t?user_id=5');
is $r->{status}, 503, 'a read probes both servers, still dead: 503';
($r, $j) = health();
like $j->{message}, qr/mysql primary down, replica 1 down$/, 'both "down" again after the failed probes';
my $log = $t->error_log;
is scalar(() = $log =~ /mysql server \Q$P\E is down after 1 failures in 4s/g), 1, 'the primary\'s "down" said once';
is scalar(() = $log =~ /mysql server \Q$R\E is down after 1 failures in 4s/g), 1, 'the replica\'s "down" said once';

$t->start_mysql;
$replica->start_mysql;
ok wait_until(sub { http_raw($port, '/t?user_id=3')->{status} == 200
                    && states((health())[1]) eq "mongo=up $P/primary=up $R/replica=probing" }, 25),
    'a read probes the primary: it is up again; the replica, not asked, still probing';

# --- MongoDB frozen: its breaker opens, 503 ---------------------------------------------------

freeze($t, 'mongo');
http_raw($port, '/t?user_id=4') for 1 .. 3;
($r, $j) = health();
is $r->{status}, 503, 'MongoDB frozen and its breaker open: 503';
is $j->{message}, 'not every backend can serve: default: mongo down, mysql primary up, replica 1 probing',
    'mongo "down"';
$t->resume_mongo;

# --- metrics ------------------------------------------------------------------------------------

my $s = $JSON->decode(http_raw($port, '/status')->{body});
my $h = $s->{bytemark_requests_total}{health} // {};
ok(($h->{200} // 0) >= 24 && ($h->{503} // 0) >= 3 && ($h->{405} // 0) == 1,
   'the probes count in bytemark_requests_total{handler="health"}')
    or diag $JSON->encode($h);

$t->stop_nginx;
$log = $t->error_log;
unlike $log, qr/\[(alert|emerg)\]|exited on signal/, 'no alert, no crash';

done_testing;
