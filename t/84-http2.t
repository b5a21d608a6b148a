#!/usr/bin/perl
# HTTP/2 (issue 15): every handler answers over h2c (prior knowledge) and over
# TLS with ALPN h2 exactly as over HTTP/1.1 -- same status, same body, the
# headers a client looks at, ETag and 304, HEAD, the error bodies (400, 404,
# 405), ingest bodies small and large (a body bigger than the HTTP/2 window and
# than client_body_buffer_size), purge, status -- and a client that goes away
# while a backend is slow (curl --max-time, curl killed) leaves the worker
# serving. The client is Debian's curl (--http1.1, --http2-prior-knowledge,
# --http2 -k).
#
# nginx >= 1.25.1 enables HTTP/2 with "http2 on;" and deprecates
# "listen ... http2"; older ones (Debian's 1.22.1) only have the latter. The
# version comes from `nginx -v`, so the test runs against Debian's nginx and
# every build of scripts/matrix.sh.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry wait_until);

my $JSON = JSON::PP->new->utf8->canonical;

# --- what the client and the server can do -----------------------------------

my $curl = Bytemark::Test::_which('curl')
    or plan skip_all => 'curl is not installed';
my $curl_v = `$curl -V 2>&1`;
plan skip_all => "curl has no HTTP/2 support ($curl -V)" unless $curl_v =~ /^Features:.*\bHTTP2\b/m;
my $openssl = Bytemark::Test::_which('openssl')
    or plan skip_all => 'openssl is not installed';

my $nginx = Bytemark::Test->nginx_bin;
my $nginx_V = `$nginx -V 2>&1`;
my ($nv) = $nginx_V =~ m{nginx version: nginx/(\d+\.\d+\.\d+)}
    or BAIL_OUT("cannot read the version from $nginx -V: $nginx_V");
plan skip_all => "$nginx is built without --with-http_v2_module"
    unless $nginx_V =~ /--with-http_v2_module/;
plan skip_all => "$nginx is built without --with-http_ssl_module"
    unless $nginx_V =~ /--with-http_ssl_module/;
my @v = split /\./, $nv;
my $http2_on = ($v[0] * 1000 + $v[1]) * 1000 + $v[2] >= 1025001;
note "nginx $nv: " . ($http2_on ? '"http2 on;"' : '"listen ... http2"');

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
my $dir = $t->dir;

my $rc = system("$openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 "
                . "-keyout $dir/key.pem -out $dir/cert.pem 2>$dir/openssl.err") >> 8;
diag Bytemark::Test::_slurp("$dir/openssl.err") if $rc;
is $rc, 0, 'a self-signed certificate' or BAIL_OUT('openssl req failed');

# --- one set of locations, three servers -------------------------------------

my $tls_port = Bytemark::Test::free_port();
my %port = (h1 => $t->nginx_port, h2c => $t->port2, h2 => $tls_port);

my $locations = <<'EOF';
        client_max_body_size 1m;
        location = /t {
            bytemark_user_id $arg_user_id;
            bytemark_cache_ttl 1h;
            bytemark_tickets;
        }
        location ~ ^/users/([^/]*)/passes/([^/]*)$ {
            bytemark_user_id $1;
            bytemark_pass_uuid $2;
            bytemark_pass;
        }
        location ~ ^/users/([^/]*)/passes$ {
            bytemark_user_id $1;
            # 100 upserts in one transaction, on a busy machine
            bytemark_mysql_timeout 10s;
            bytemark_ingest;
        }
        location ~ ^/users/([^/]*)/cache$ {
            bytemark_user_id $1;
            bytemark_purge;
        }
        location ~ ^/slow/([^/]*)/passes$ {
            bytemark_user_id $1;
            bytemark_mysql_timeout 3s;
            bytemark_ingest;
        }
        location = /slow {
            bytemark_user_id $arg_user_id;
            bytemark_mysql_timeout 3s;
            bytemark_tickets;
        }
        location = /nofill {
            bytemark_user_id $arg_user_id;
            bytemark_cache_fill off;
            bytemark_tickets;
        }
        location = /status {
            bytemark_status;
        }
        location = /static {
            return 200 "static ok\n";
        }
EOF

my ($h2c_listen, $h2_listen) = $http2_on
    ? ("listen 127.0.0.1:$port{h2c};\n        http2 on;",
       "listen 127.0.0.1:$port{h2} ssl;\n        http2 on;")
    : ("listen 127.0.0.1:$port{h2c} http2;",
       "listen 127.0.0.1:$port{h2} ssl http2;");

$t->start_nginx(<<"EOF");
    bytemark_mongo_uri %%MONGO_URI%%;
    bytemark_mongo_collection %%MONGO_COLL%%;
    bytemark_mysql %%MYSQL%%;
    server {
        listen 127.0.0.1:%%PORT%%;
$locations
    }
    server {
        $h2c_listen
$locations
    }
    server {
        $h2_listen
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
$locations
    }
EOF

# --- the client ---------------------------------------------------------------

my %proto_args = (
    h1  => ['--http1.1'],
    h2c => ['--http2-prior-knowledge'],
    h2  => ['--http2', '-k'],
);

sub base {
    my $p = shift;
    return ($p eq 'h2' ? 'https' : 'http') . "://127.0.0.1:$port{$p}";
}

my $seq = 0;

# curl_req($proto, $method, $path, headers => {...}, body => $text,
#          max_time => $s): {status, version, headers (lower-case names,
#          last value), body, rc (curl's exit code), secs}
sub curl_req {
    my ($p, $method, $path, %o) = @_;
    my $n = ++$seq;
    my ($hf, $bf, $ef) = ("$dir/curl-$n.h", "$dir/curl-$n.b", "$dir/curl-$n.e");
    my @args = (@{ $proto_args{$p} }, '-s', '-S', '--stderr', $ef, '-D', $hf, '-o', $bf,
                '-w', '%{http_code} %{http_version}', '--max-time', $o{max_time} // 20);
    if ($method eq 'HEAD') { push @args, '--head' }
    elsif ($method ne 'GET') { push @args, '-X', $method }
    for my $k (sort keys %{ $o{headers} // {} }) {
        push @args, '-H', "$k: $o{headers}{$k}";
    }
    if (defined $o{body}) {
        Bytemark::Test::_spew("$dir/curl-$n.in", $o{body});
        push @args, '--data-binary', "\@$dir/curl-$n.in";
        push @args, '-H', 'Content-Type: application/json' unless $o{headers}{'Content-Type'};
    }
    my $t0 = time;
    open my $fh, '-|', $curl, @args, base($p) . $path or die "cannot run curl: $!";
    my $w = do { local $/; <$fh> } // '';
    close $fh;
    my $crc = $? >> 8;
    # (with --head, curl writes the header block where the body would go)
    my %res = (rc => $crc, secs => time - $t0, headers => {}, stderr => Bytemark::Test::_slurp($ef),
               body => $method eq 'HEAD' ? '' : Bytemark::Test::_slurp($bf));
    @res{qw(status version)} = split ' ', $w;
    $res{status} //= 0;
    $res{version} //= '';
    for my $line (split /\r?\n/, Bytemark::Test::_slurp($hf)) {
        $res{headers}{lc $1} = $2 if $line =~ /^([^:\s]+):\s*(.*?)\s*$/;
    }
    unlink $hf, $bf, $ef, "$dir/curl-$n.in";
    return \%res;
}

my %want_version = (h1 => '1.1', h2c => '2', h2 => '2');

# The headers that belong to the answer (not Date, Server, Connection, ...).
my @HEADERS = qw(content-type etag x-bytemark-source allow retry-after content-length);

# same(\%h1, \%other, $what, %o): the other protocol's answer is the same;
# o{json_except} => [keys] compares the JSON bodies without those keys
# (a MySQL answer carries the time of its read), o{keys_only} => 1 compares
# the JSON bodies' key sets (status counters change between requests).
sub same {
    my ($a, $b, $what, %o) = @_;
    my $ok = 1;
    $ok &&= is $b->{status}, $a->{status}, "$what: status $a->{status}";
    my @h = @HEADERS;
    @h = grep { $_ ne 'content-length' } @h if $o{keys_only} || $o{json_except};
    $ok &&= is_deeply { map { $_ => $b->{headers}{$_} } grep { defined $a->{headers}{$_} || defined $b->{headers}{$_} } @h },
              { map { $_ => $a->{headers}{$_} } grep { defined $a->{headers}{$_} || defined $b->{headers}{$_} } @h },
              "$what: same headers";
    if ($o{keys_only}) {
        my ($ja, $jb) = map { eval { $JSON->decode($_->{body}) } } $a, $b;
        $ok &&= is_deeply [sort keys %{ $jb // {} }], [sort keys %{ $ja // {} }], "$what: same JSON keys";
        $ok &&= ok scalar(keys %{ $ja // {} }), "$what: a JSON object";
    } elsif ($o{json_except}) {
        my ($ja, $jb) = map { eval { $JSON->decode($_->{body}) } } $a, $b;
        delete @{$_}{ @{ $o{json_except} } } for grep { ref } $ja, $jb;
        $ok &&= is_deeply $jb, $ja, "$what: same body (but for " . join(', ', @{ $o{json_except} }) . ')';
    } else {
        $ok &&= is $b->{body}, $a->{body}, "$what: same body";
    }
    return $ok;
}

# Asks the same thing over HTTP/1.1 first, then over h2c and h2, and checks
# each protocol was really used and answered the same. Returns the answers.
sub each_proto {
    my ($what, $method, $path, %o) = @_;
    my %req = map { $_ => $o{$_} } grep { exists $o{$_} } qw(headers body);
    my %r;
    for my $p (qw(h1 h2c h2)) {
        my $path_p = ref $path ? $path->($p) : $path;
        my %req_p = %req;
        $req_p{body} = $o{body}->($p) if ref $o{body};
        $r{$p} = curl_req($p, $method, $path_p, %req_p);
        is $r{$p}{rc}, 0, "$what over $p: curl succeeded" or diag($r{$p}{stderr}), next;
        is $r{$p}{version}, $want_version{$p}, "$what over $p: HTTP/$want_version{$p}";
    }
    for my $p (qw(h2c h2)) {
        same($r{h1}, $r{$p}, "$what: $p = h1", %o)
            or diag "h1: " . explain($r{h1}) . "\n$p: " . explain($r{$p});
    }
    return \%r;
}

# A request refused before its body is read (405, say) is sent without a
# body: nginx then ends the stream with RST_STREAM(NO_ERROR) while curl is
# still uploading, and curl 7.88 reports that as an error (92) -- for
# nginx's own "return 405" just the same, so it is no matter of the module.

# --- data ---------------------------------------------------------------------

add_pass($t, user => 41, uuid => uuid(4101), status => 'active', ts => 1000);
add_pass($t, user => 41, uuid => uuid(4102), status => 'expired', ts => 2000, version => 4);
add_pass($t, user => 42, uuid => uuid(4201), status => 'active');
$t->mongo_insert([cache_entry(43, passes => [{ pass_uuid => uuid(4301), status => 'cached', extra => [1, 2] }])]);

# --- tickets ------------------------------------------------------------------

# user 41 is not cached: without the fill every protocol gets MySQL's answer
# (with the time of its read); then one lookup fills the cache, and every
# protocol gets the cache entry.
my $r = each_proto('tickets, MySQL answer', 'GET', '/nofill?user_id=41', json_except => ['timestamp']);
is $r->{$_}{headers}{'x-bytemark-source'}, 'mysql', "tickets over $_: from MySQL" for qw(h1 h2c h2);
is curl_req('h2', 'GET', '/t?user_id=41')->{headers}{'x-bytemark-source'}, 'mysql', 'a lookup over h2 ...';
ok wait_until(sub { $t->mongo_count({ user_id => 41 }) }), '... fills the cache';

$r = each_proto('tickets, cache hit', 'GET', '/t?user_id=41');
is $r->{h2}{headers}{'x-bytemark-source'}, 'mongo', 'tickets over h2: from the cache';
my $etag = $r->{h1}{headers}{etag};
like $etag, qr/^"[0-9a-f]+"$/, 'a strong ETag';
is_deeply [map { $_->{pass_uuid} } @{ $JSON->decode($r->{h2}{body})->{passes} }], [uuid(4101)],
    'the body over h2 has the passes';

each_proto('tickets, cached entry with extra fields', 'GET', '/t?user_id=43');
each_proto('tickets, filters', 'GET', '/t?user_id=41&status=expired&version=4');
each_proto('tickets, HEAD', 'HEAD', '/t?user_id=41');
$r = each_proto('tickets, If-None-Match', 'GET', '/t?user_id=41', headers => { 'If-None-Match' => $etag });
is $r->{$_}{status}, 304, "304 over $_" for qw(h2c h2);
is $r->{$_}{body}, '', "no body with the 304 over $_" for qw(h2c h2);
each_proto('tickets, other ETag', 'GET', '/t?user_id=41', headers => { 'If-None-Match' => '"0000"' });
each_proto('tickets, no user id: 400', 'GET', '/t');
each_proto('tickets, bad user id: 400', 'GET', '/t?user_id=0x10');
each_proto('tickets, bad version: 400', 'GET', '/t?user_id=41&version=5');
$r = each_proto('tickets, PUT: 405', 'PUT', '/t?user_id=41');
is $r->{h2}{status}, 405, '405 over h2';
like $r->{h2}{headers}{allow} // '', qr/GET/, '... with Allow';
is_deeply [sort keys %{ $JSON->decode($r->{h2}{body}) }], [qw(error message)], '... and an error body';

# --- pass ---------------------------------------------------------------------

$r = each_proto('pass, from the cache', 'GET', '/users/41/passes/' . uuid(4101));
my $petag = $r->{h1}{headers}{etag};
each_proto('pass, If-None-Match', 'GET', '/users/41/passes/' . uuid(4101), headers => { 'If-None-Match' => $petag });
each_proto('pass, from MySQL', 'GET', '/users/42/passes/' . uuid(4201));
each_proto('pass, upper-case uuid', 'GET', '/users/41/passes/' . uc uuid(4102));
$r = each_proto('pass of another user: 404', 'GET', '/users/42/passes/' . uuid(4101));
is $r->{h2c}{status}, 404, '404 over h2c';
each_proto('pass, bad uuid: 400', 'GET', '/users/41/passes/not-a-uuid');
each_proto('pass, DELETE: 405', 'DELETE', '/users/41/passes/' . uuid(4101));

# --- ingest -------------------------------------------------------------------

my %pnum = (h1 => 1, h2c => 2, h2 => 3);
$r = each_proto('ingest, one pass', 'POST', '/users/44/passes',
                body => sub { $JSON->encode({ pass_uuid => uuid(4400 + $pnum{$_[0]}), status => 'new',
                                              payload => { via => 'same' }, timestamp => 5000 }) });
is $r->{h2}{status}, 200, 'ingest over h2: 200';
is_deeply $JSON->decode($r->{h2}{body}), { user_id => 44, written => 1 }, '... written: 1';
is_deeply [map { $_->[0] } @{ $t->sql("SELECT pass_uuid FROM bytemark_pass WHERE user_id = 44 ORDER BY pass_uuid") }],
    [map { uuid(4400 + $_) } 1 .. 3], 'each protocol wrote its pass to MySQL';

# 100 passes of about 1 KB each: more than the 64 KB initial HTTP/2 window
# and than client_body_buffer_size (the body goes to a temp file).
my $big = sub {
    my $p = shift;
    $JSON->encode([ map { { pass_uuid => uuid(450000 + 1000 * $pnum{$p} + $_), status => 'bulk',
                            payload => { pad => 'x' x 1000, n => $_ } } } 1 .. 100 ]);
};
ok length($big->('h2')) > 100_000, 'a large ingest body (' . length($big->('h2')) . ' bytes)';
$r = each_proto('ingest, 100 passes in a large body', 'POST', '/users/45/passes', body => $big);
is_deeply $JSON->decode($r->{h2}{body} || '{}'), { user_id => 45, written => 100 }, '... written: 100 over h2';
is $t->sql('SELECT COUNT(*) FROM bytemark_pass WHERE user_id = 45')->[0][0], 300, '... all 300 rows in MySQL';

each_proto('ingest, malformed JSON: 400', 'POST', '/users/44/passes', body => '{"pass_uuid": ');
each_proto('ingest, unknown field: 400', 'POST', '/users/44/passes',
           body => $JSON->encode({ pass_uuid => uuid(4409), status => 'x', colour => 'red' }));
each_proto('ingest, empty body: 400', 'POST', '/users/44/passes', body => '');
each_proto('ingest, another user\'s pass: 409', 'POST', '/users/44/passes',
           body => $JSON->encode({ pass_uuid => uuid(4201), status => 'stolen' }));
each_proto('ingest, GET: 405', 'GET', '/users/44/passes');

# --- purge --------------------------------------------------------------------

$r = each_proto('purge', 'DELETE', sub { '/users/' . (460 + $pnum{$_[0]}) . '/cache' });
is_deeply [$r->{h2}{status}, $r->{h2}{body}], [204, ''], 'purge over h2: 204 without a body';
$t->mongo_insert([cache_entry(47)]);
curl_req('h2', 'DELETE', '/users/47/cache');
is $t->mongo_count({ user_id => 47 }), 0, 'purge over h2 dropped the entry';
each_proto('purge, bad user id: 400', 'DELETE', '/users/abc/cache');
each_proto('purge, GET: 405', 'GET', '/users/47/cache');

# --- status -------------------------------------------------------------------

$r = each_proto('status, JSON', 'GET', '/status', keys_only => 1);
$r = each_proto('status, Prometheus', 'GET', '/status?format=prometheus', json_except => []);
my $prom = curl_req('h2', 'GET', '/status?format=prometheus');
like $prom->{body}, qr/^bytemark_requests_total\{handler="ingest",status="200"\} \d+/m,
    'Prometheus text over h2';
each_proto('status, POST: 405', 'POST', '/status');

# --- several streams on one connection ---------------------------------------

for my $p (qw(h2c h2)) {
    my @users = (41, 42, 43, 41, 42, 43);
    my @args = (@{ $proto_args{$p} }, '-s', '-S', '--stderr', "$dir/par-$p.e",
                '--parallel', '--parallel-immediate',
                '-w', '%{http_code} %{http_version} %{num_connects}\n');
    push @args, '-o', "$dir/par-$p-$_", base($p) . "/users/$users[$_]/passes/" . uuid($users[$_] * 100 + 1)
        for 0 .. $#users;
    open my $fh, '-|', $curl, @args or die "curl: $!";
    my @lines = <$fh>;
    close $fh;
    is $? >> 8, 0, "$p: six requests with curl --parallel";
    is scalar(grep { /^(200|404) 2 / } @lines), 6, "$p: six answers over HTTP/2"
        or diag "@lines";
    my %body_of;
    for my $i (0 .. $#users) {
        my $body = Bytemark::Test::_slurp("$dir/par-$p-$i");
        $body_of{$users[$i]} //= $body;
        is $body, $body_of{$users[$i]}, "$p: stream $i answered for its own user" if $i >= 3;
    }
    like $body_of{43}, qr/"cached"/, "$p: user 43's pass from the cache";
}

# --- a client that goes away while MySQL is slow --------------------------------

my @workers = $t->worker_pids;
$t->pause_mysql;
for my $p (qw(h2c h2)) {
    my $a = curl_req($p, 'GET', '/slow?user_id=48', max_time => 1);
    is $a->{rc}, 28, "$p: curl gave up after --max-time 1 (MySQL paused)";
    $a = curl_req($p, 'POST', '/slow/48/passes', max_time => 1,
                  body => $JSON->encode({ pass_uuid => uuid(4800 + $pnum{$p}), status => 'late' }));
    is $a->{rc}, 28, "$p: an ingest client gave up too";

    # killed outright, in the middle of its request
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        { exec $curl, @{ $proto_args{$p} }, '-s', base($p) . '/slow?user_id=49'; }
        POSIX::_exit(127);
    }
    sleep 0.5;
    kill 'KILL', $pid;
    waitpid $pid, 0;

    my $s = curl_req($p, 'GET', '/static', max_time => 5);
    is_deeply [$s->{status}, $s->{body}], [200, "static ok\n"], "$p: the worker serves meanwhile";
    ok $s->{secs} < 1, sprintf '... at once (%.2fs)', $s->{secs};
}
$t->resume_mysql;
sleep 3.2;    # the abandoned calls end by their budget, or as MySQL answers

for my $p (qw(h1 h2c h2)) {
    my $a = curl_req($p, 'GET', '/slow?user_id=42');
    is $a->{status}, 200, "after the aborts, over $p: a lookup answers";
    like $a->{body}, qr/\Q${\ uuid(4201)}\E/, '... with the pass';
}
is_deeply [sort $t->worker_pids], [sort @workers], 'the same worker, still running';
unlike $t->error_log, qr/\[(alert|emerg|crit)\]|exited on signal/, 'no alert, crit or crash in the error log';

done_testing;
