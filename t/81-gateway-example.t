#!/usr/bin/perl
# The edge-gateway example (issue 8) as shipped: example/gateway/nginx.conf
# with its placeholders filled in (as example/gateway/run.sh does), run
# by Debian's nginx against the harness's MariaDB (sql/sample.sql) and
# MongoDB. Without credentials: 401; with a token: that user's own tickets
# and passes only, whatever the client claims; rate limiting; the status
# location only for allowed addresses; the access log carries the module's
# variables.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use HTTP::Tiny;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry wait_until);

my $REPO = $Bytemark::Test::REPO;
my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
my $dir = $t->dir;

$t->load_sample;    # user 12345: three passes; user 777: one
my %PASS = (
    alice_v3 => '3f8e2a6c-1b4d-4c7e-9a2f-5d6b8c0e1f23',
    alice_v4 => 'b5a4c3d2-e1f0-4a9b-8c7d-6e5f4a3b2c1d',
    bob      => '0e1d2c3b-4a59-4687-9a0b-c1d2e3f4a5b6',
);
my %AUTH = (alice => { Authorization => 'Bearer alice-token' },
            bob   => { Authorization => 'Bearer bob-token' });

# --- the example, with the harness's addresses and paths ---------------------------------

my $shipped = do { local $/; open my $fh, '<', "$REPO/example/gateway/nginx.conf" or die $!; <$fh> };
unlike $shipped, qr/%%[A-Z_]+%%/, 'the shipped example has no placeholders';
unlike $shipped, qr/^\s*load_module/m, 'and no load_module line to clash with the package\'s snippet';
my @cmd = ('bash', "$REPO/tools/example_conf.sh", "$REPO/example/gateway/nginx.conf",
           'module=' . $t->module_path, "dir=$dir", 'port=' . $t->nginx_port,
           'auth_port=' . $t->port2, 'mongo_uri=' . $t->mongo_uri,
           'mongo_coll=' . $t->mongo_db . '.' . $t->mongo_coll, 'mysql=' . $t->mysql_directive);
my $conf = do { open my $fh, '-|', @cmd or die "example_conf.sh: $!"; local $/; my $c = <$fh>;
                close $fh or die "tools/example_conf.sh failed ($?)\n"; $c };
# Debian's nginx has no --user: as root the workers would run as nobody.
$conf = "user root;\n$conf" if $> == 0;
open my $out, '>', "$dir/gateway.conf" or die $!;
print $out $conf;
close $out;

sub nginx { system($t->nginx_bin, '-p', "$dir/", '-c', "$dir/gateway.conf", @_) >> 8 }

is nginx('-t', '-q'), 0, 'nginx -t accepts the example';
is nginx(), 0, 'nginx starts with it';
my $master;
wait_until(sub { $master = do { open my $p, '<', "$dir/nginx.pid" or return; <$p> } }, 10);
chomp $master if $master;
ok $master, "master pid $master" or die "nginx did not start:\n" . $t->error_log;
wait_until(sub { IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->nginx_port) }, 10);

END {
    # stop the example's nginx before the harness stops the databases
    # (the harness makes the test a child subreaper: the daemonized master is
    # our child, and a zombie until reaped)
    if ($master && kill 0, $master) {
        kill 'TERM', $master;
        my $end = time + 20;
        while (time < $end) {
            my $w = waitpid($master, POSIX::WNOHANG());
            last if $w == $master || ($w == -1 && !kill 0, $master);
            sleep 0.05;
        }
    }
}

sub get_json {
    my ($path, $h) = @_;
    my $r = $t->get($path, $h);
    my $j = ($r->{content} // '') =~ /^\s*[\{\[]/ ? eval { $t->json($r) } : undef;
    return ($r, $j);
}
# an error nginx answered itself: JSON, the module's two keys
sub json_error {
    my ($res, $status, $code, $what) = @_;
    my $j = eval { JSON::PP->new->decode($res->{content} // '') } || {};
    ok $res->{status} == $status && ($j->{error} // '') eq $code
       && join(',', sort keys %$j) eq 'error,message'
       && ($res->{headers}{'content-type'} // '') eq 'application/json',
        "$what: $status with a JSON body {\"error\": \"$code\", ...}"
        or diag "got $res->{status} " . ($res->{headers}{'content-type'} // '-') . ' ' . ($res->{content} // '');
}

sub uuids { [ sort map { $_->{pass_uuid} } @{ $_[0] // [] } ] }

# --- without credentials: 401 ------------------------------------------------------------

my ($r, $j) = get_json('/v1/users/me/tickets');
is $r->{status}, 401, 'no Authorization: 401';
json_error($r, 401, 'unauthorized', 'no Authorization');
like $r->{headers}{'www-authenticate'} // '', qr/^Bearer/, '... and WWW-Authenticate: Bearer';
($r) = get_json('/v1/users/me/tickets', { Authorization => 'Bearer wrong-token' });
is $r->{status}, 401, 'an unknown token: 401';
($r) = get_json('/v1/users/me/tickets?user_id=12345', { 'X-User-Id' => '12345' });
is $r->{status}, 401, 'claiming a user id without a token: 401';
($r) = get_json("/v1/users/me/passes/$PASS{alice_v3}");
is $r->{status}, 401, 'a pass without credentials: 401';

# --- with credentials: the user's own tickets only ----------------------------------------

($r, $j) = get_json('/v1/users/me/tickets', $AUTH{alice});
is $r->{status}, 200, "alice's tickets: 200" or diag $r->{content};
is $j->{user_id}, 12345, '... of user 12345';
is_deeply uuids($j->{passes}), [sort '3f8e2a6c-1b4d-4c7e-9a2f-5d6b8c0e1f23',
                                     '7c2d9e4f-6a1b-4d3c-8e5f-0a9b8c7d6e5f'], '... her v3 passes';
is_deeply uuids($j->{passes4}), [$PASS{alice_v4}], '... her v4 pass';
unlike $r->{content}, qr/\Q$PASS{bob}\E/, "... and nothing of bob's";
is $r->{headers}{'x-bytemark-source'}, 'mysql', '... from MySQL (no cache entry yet)';

($r, $j) = get_json('/v1/users/me/tickets', $AUTH{bob});
is $r->{status}, 200, "bob's tickets: 200";
is $j->{user_id}, 777, '... of user 777';
is_deeply uuids($j->{passes}), [$PASS{bob}], '... his pass only';
is_deeply $j->{passes4}, [], '... no v4 passes';

($r, $j) = get_json('/v1/users/me/tickets?user_id=777', { %{ $AUTH{alice} }, 'X-User-Id' => '777' });
is $j->{user_id}, 12345, 'a user_id argument or X-User-Id header from the client changes nothing';

($r, $j) = get_json('/v1/users/me/tickets?status=active&version=3', $AUTH{alice});
is_deeply uuids($j->{passes}), [$PASS{alice_v3}], 'status and version filters pass through';
ok !exists $j->{passes4}, '... version=3: no passes4';

# The MySQL answer filled the cache: the next lookup is a cache hit.
wait_until(sub { $t->mongo_count({ user_id => 12345 }) }, 5);
($r, $j) = get_json('/v1/users/me/tickets', $AUTH{alice});
is $r->{headers}{'x-bytemark-source'}, 'mongo', "alice's tickets again: from the MongoDB cache";

# --- passes ---------------------------------------------------------------------------

($r, $j) = get_json("/v1/users/me/passes/$PASS{alice_v4}", $AUTH{alice});
is $r->{status}, 200, "alice's own pass: 200";
is $j->{user_id}, 12345, '... hers';
is $j->{version}, 4, '... v4';
is $j->{pass}{pass_uuid}, $PASS{alice_v4}, '... that pass';

($r, $j) = get_json("/v1/users/me/passes/$PASS{bob}", $AUTH{alice});
is $r->{status}, 404, "bob's pass with alice's token: 404";
is $j->{error}, 'not_found', '... not_found';

($r, $j) = get_json('/v1/users/me/passes/not-a-uuid', $AUTH{alice});
is $r->{status}, 400, 'a malformed pass uuid: 400';
is $j->{error}, 'invalid_pass_uuid', '... invalid_pass_uuid';

($r) = get_json('/v1/users/me/other', $AUTH{alice});
is $r->{status}, 404, 'an unknown route: 404';
($r) = get_json('/v1/tickets?user_id=12345');
is $r->{status}, 404, 'no route takes the user id from the client';

$r = $t->http('POST', '/v1/users/me/tickets', $AUTH{alice}, '{}');
is $r->{status}, 405, 'POST on the tickets route: 405 (from the module)';

# --- the status location: allowed addresses only -----------------------------------------

($r, $j) = get_json('/internal/bytemark-status');
is $r->{status}, 200, 'status from 127.0.0.1 (allowed): 200' or diag $r->{content};
ok ref $j eq 'HASH' && exists $j->{bytemark_requests_total}, '... the JSON counters';
my $other = HTTP::Tiny->new(local_address => '127.0.0.2', timeout => 10);
$r = $other->get($t->url('/internal/bytemark-status'));
is $r->{status}, 403, 'status from 127.0.0.2 (not allowed): 403';
json_error($r, 403, 'forbidden', 'the 403 of "deny"');

# --- the errors nginx answers itself are JSON too ------------------------------------------

# one request on its own connection, the whole answer
sub raw {
    my ($req) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->nginx_port, Timeout => 10)
        or die "connect: $!";
    print $s $req;
    local $/;
    my $res = <$s> // '';
    my ($status, $head, $body) = $res =~ m{^HTTP/1\.1 (\d+)[^\r]*\r\n(.*?)\r\n\r\n(.*)}s;
    my %h = map { /^([^:]+):\s*(.*)$/ ? (lc $1 => $2) : () } split /\r\n/, $head // '';
    return { status => $status // 0, headers => \%h, content => $body };
}

$r = raw("GET /v1/users/me/tickets HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer alice-token\r\n"
       . "Content-Length: 2000000\r\nConnection: close\r\n\r\n");
json_error($r, 413, 'too_large', 'a body over client_max_body_size');
$r = raw('GET /v1/users/me/tickets?pad=' . ('x' x 9000) . " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
json_error($r, 414, 'uri_too_long', 'a request line over large_client_header_buffers');

# --- the access log ------------------------------------------------------------------------

my $log = wait_until(sub { my $l = do { local $/; open my $fh, "<", "$dir/gateway.log" or return ""; <$fh> }; $l =~ m{"GET /v1/users/me/passes/$PASS{alice_v4} } ? $l : '' }, 5);
like $log, qr{"GET /v1/users/me/tickets HTTP/1\.1" 401 \d+ user=- src=- }m,
    'access log: a 401 names no user';
like $log, qr{"GET /v1/users/me/tickets HTTP/1\.1" 200 \d+ user=12345 src=mysql mcache=\S* mongo=[\d.]+ mysql=[\d.]+ auth=[\d.]+ rt=}m,
    'access log: user, source, backend times and the auth time';
like $log, qr{"GET /v1/users/me/tickets HTTP/1\.1" 200 \d+ user=12345 src=mongo mcache=\S* mongo=[\d.]+ mysql=- }m,
    'access log: a cache hit asked only MongoDB';

# --- rate limiting: 20 r/s, burst 40 per client address --------------------------------------

# limit_req runs before auth_request: requests without a token count too, and
# are cheap, so 120 of them come well within a few seconds even on a busy
# machine.
my $ua = HTTP::Tiny->new(keep_alive => 1, timeout => 10);
my (%codes, $r429);
my $t0 = time;
for (1 .. 120) {
    my $res = $ua->get($t->url('/v1/users/me/tickets'));
    $codes{ $res->{status} }++;
    $r429 //= $res if $res->{status} == 429;
}
my $took = time - $t0;
my $allowed = 41 + int($took * 20) + 1;
SKIP: {
    skip sprintf('120 requests took %.1fs: too slow to exceed 20 r/s + 40', $took), 1
        if $allowed >= 120;
    ok $codes{429}, sprintf('120 requests in %.2fs: %d answered 429', $took, $codes{429} // 0);
    json_error($r429 // {}, 429, 'too_many_requests', 'over the rate');
}
ok +($codes{401} // 0) <= $allowed, "... at most the burst plus the rate got through (" . ($codes{401} // 0) . ")";
is join(',', sort keys %codes), $codes{429} ? '401,429' : '401', '... nothing but 401 and 429';
like $t->error_log, qr/limiting requests, excess: .* by zone "gateway_per_client"/, '... logged as limited'
    if $codes{429};

# --- example/nginx.conf (the demo's) is as safe to ship ----------------------------------

my $demo_conf = do { local $/; open my $fh, '<', "$REPO/example/nginx.conf" or die $!; <$fh> };
unlike $demo_conf, qr/%%[A-Z_]+%%/, 'example/nginx.conf has no placeholders';
unlike $demo_conf, qr/^\s*load_module/m, 'and no load_module line';
mkdir "$dir/demo";
my @dcmd = ('bash', "$REPO/tools/example_conf.sh", "$REPO/example/nginx.conf",
            'module=' . $t->module_path, "dir=$dir/demo", 'port=' . $t->port2,
            'mongo_uri=' . $t->mongo_uri, 'mongo_coll=' . $t->mongo_db . '.' . $t->mongo_coll,
            'mysql=' . $t->mysql_directive);
my $dconf = do { open my $fh, '-|', @dcmd or die $!; local $/; my $c = <$fh>; close $fh or die "example_conf.sh failed\n"; $c };
open my $dout, '>', "$dir/demo/nginx.conf" or die $!;
print $dout ($> == 0 ? "user root;\n" : ''), $dconf;
close $dout;
my $tout = `@{[ $t->nginx_bin ]} -t -p $dir/demo/ -c $dir/demo/nginx.conf 2>&1`;
is $? >> 8, 0, 'nginx -t accepts it with the demo\'s addresses (tools/example_conf.sh)' or diag $tout;

done_testing;
