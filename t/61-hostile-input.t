#!/usr/bin/perl
# Hostile input at the HTTP level (issue 7): thousands of generated requests
# against nginx with both backends -- malformed, oversized, percent-encoded,
# NUL-containing, negative, huge and Unicode user ids and uuids (from $arg_*,
# from regex captures of the path, from a header), status/version arguments,
# malformed, deeply nested, huge and non-UTF-8 ingest bodies, other methods,
# broken requests -- through a small micro-cache zone (hostile keys, constant
# evictions, hits). Every answer is a 4xx -- with the SPEC error shape
# {"error","message"} where the module answers (nginx's own 400/404/413/414
# pages are HTML) -- or, for input that is valid after all, the answer SPEC 3
# gives; never a 5xx, a crash or a hang; and neither database changes.
#
# The requests are generated from a seed (BYTEMARK_HOSTILE_SEED, default
# fixed) so that a failure can be replayed; BYTEMARK_HOSTILE_N scales the
# number of generated values (default 2: about 6000 requests).

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(time);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry);
use Bytemark::Hostile qw(raw_http request check_error pct pct_all valid_user_id
                         valid_uuid ref_decode ref_filter db_fingerprint @INJECTIONS);

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;
my $SEED = $ENV{BYTEMARK_HOSTILE_SEED} // 20241121;
my $N    = $ENV{BYTEMARK_HOSTILE_N} // 2;
srand $SEED;
diag "seed $SEED (BYTEMARK_HOSTILE_SEED replays it)";

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);

# --- data: two users, odd statuses; one user cached --------------------------------

my @statuses = ('active', 'expired', 'used', 'a,b', "\x{e9}t\x{e9}", 'x y', '50%', 'a+b', 'A');
my (@p1001, @p1002, %version_of);
for my $i (0 .. $#statuses) {
    my $st = $statuses[$i];
    my $s8 = $st; utf8::encode($s8);
    my $row = add_pass($t, user => 1001, uuid => uuid(100 + $i), status => $s8,
                       version => 3 + $i % 2, ts => 1732000000000 + $i);
    $row->{status} = $st;    # characters, for the JSON of the cache entry
    $version_of{$row->{pass_uuid}} = 3 + $i % 2;
    push @p1001, $row;
}
push @p1002, add_pass($t, user => 1002, uuid => uuid(200), status => 'active');
$t->mongo_insert(cache_entry(1001,
    passes  => [ map { $p1001[$_] } grep { $_ % 2 == 0 } 0 .. $#p1001 ],
    passes4 => [ map { $p1001[$_] } grep { $_ % 2 == 1 } 0 .. $#p1001 ]));
my %status_of = map { $_->{pass_uuid} => $_->{status} } @p1001;

$t->start_nginx(<<'EOF');
bytemark_mongo_uri %%MONGO_URI%%;
bytemark_mongo_collection %%MONGO_COLL%%;
bytemark_mysql %%MYSQL%%;
bytemark_cache_fill off;    # a valid lookup must not write either
# answers kept in a small shared zone: hostile keys, evictions, hits
bytemark_microcache zone=hostile:32k ttl=30s;
server {
    listen 127.0.0.1:%%PORT%%;
    client_max_body_size 64k;
    add_header X-Cache $bytemark_cache_status always;
    location = /t {
        bytemark_user_id $arg_user_id;
        bytemark_tickets;
    }
    location = /th {
        bytemark_user_id $http_x_user_id;
        bytemark_tickets;
    }
    location ~ ^/users/([^/]*)/passes/([^/]*)$ {
        bytemark_user_id $1;
        bytemark_pass_uuid $2;
        bytemark_pass;
    }
    location = /p {
        bytemark_user_id $arg_user_id;
        bytemark_pass_uuid $arg_uuid;
        bytemark_pass;
    }
    location ~ ^/ingest/([^/]*)$ {
        bytemark_user_id $1;
        bytemark_ingest_max_passes 5;
        bytemark_ingest;
    }
    location ~ ^/purge/([^/]*)$ {
        bytemark_user_id $1;
        bytemark_purge;
    }
    location / {
        return 404;
    }
}
EOF

my $before = db_fingerprint($t);
my $port = $t->nginx_port;

# --- the checks ---------------------------------------------------------------------

my (%count, @fail);
my $t0 = time;

# expect: {status => N, code => 'x'} exact; {any4xx => 1}; {ok => sub {...}}
# for answers that input valid after all gets.
sub run {
    my ($what, $bytes, $expect) = @_;
    # a request line over nginx's 8k header buffer: its own 414 (or 400)
    $expect = { nginx => [400, 414] } if $bytes =~ /\A[^\r\n]{8000}/;
    my $res = raw_http($port, $bytes, timeout => 20);
    $count{total}++;
    $count{"status $res->{status}"}++;
    $count{"cache $res->{headers}{'x-cache'}"}++ if $res->{headers}{'x-cache'};
    my $why = judge($res, $expect);
    if ($why) {
        push @fail, sprintf "%s: %s\n    request: %s\n    answer: %s %s", $what, $why,
            substr(printable($bytes), 0, 300), $res->{status} || $res->{error},
            substr(printable($res->{body}), 0, 200);
    }
    return $res;
}

sub judge {
    my ($res, $e) = @_;
    return "no answer ($res->{error})" unless $res->{status};
    return "a $res->{status}" if $res->{status} >= 500;
    return "an unexpected $res->{status}" if $res->{status} < 400 && !$e->{ok};
    my $json = ($res->{headers}{'content-type'} // '') =~ m{^application/json};
    if ($res->{status} >= 400 && $json && !$e->{head}) {
        my $bad = check_error($res);
        return "error shape: $bad" if $bad;
    }
    if ($e->{ok}) {
        return $e->{ok}->($res);
    }
    if ($e->{status}) {
        return check_error($res, $e->{status}, $e->{code});
    }
    if ($e->{nginx}) {
        return "status $res->{status}, expected one of @{ $e->{nginx} }"
            unless grep { $_ == $res->{status} } @{ $e->{nginx} };
    }
    return;
}

sub ok_or_4xx {
    my $res = shift;
    return $res->{status} == 200 || ($res->{status} >= 400 && $res->{status} < 500)
           ? undef : "status $res->{status}";
}

sub printable {
    my $s = shift // '';
    $s =~ s/([^\x20-\x7e])/sprintf '\\x%02x', ord $1/ge;
    return $s;
}

# the answer of a tickets lookup that SPEC 3.1 accepts: 200, exactly the
# four keys (or three with a version), passes filtered as asked
sub tickets_ok {
    my ($user, $filter) = @_;
    return sub {
        my $res = shift;
        return "status $res->{status}, expected 200" unless $res->{status} == 200;
        my $j = eval { $JSON->decode($res->{body}) } or return 'body is not JSON';
        my @keys = ('passes', 'passes4', 'timestamp', 'user_id');
        @keys = grep { $_ ne 'passes4' } @keys if $filter->{versions} eq '3';
        @keys = grep { $_ ne 'passes' } @keys if $filter->{versions} eq '4';
        return 'keys ' . join(',', sort keys %$j) unless join(',', sort keys %$j) eq join(',', @keys);
        return "user_id $j->{user_id}" unless $j->{user_id} == $user;
        for my $arr (grep { /^passes/ } @keys) {
            for my $p (@{ $j->{$arr} }) {
                if ($filter->{statuses}) {
                    my $st = $p->{status};
                    utf8::encode($st);
                    return "a pass with status '$st' not asked for"
                        unless grep { $_ eq $st } @{ $filter->{statuses} };
                }
            }
        }
        if ($user == 1001) {
            my $want = grep {
                my $st = $_->{status};
                utf8::encode($st);
                my $v = $version_of{$_->{pass_uuid}};
                ($filter->{versions} eq 'all' || $filter->{versions} eq $v)
                && (!$filter->{statuses} || grep { $_ eq $st } @{ $filter->{statuses} })
            } @p1001;
            my $got = 0;
            $got += @{ $j->{$_} // [] } for qw(passes passes4);
            return "$got passes, expected $want" unless $got == $want;
        }
        return;
    };
}

# --- generators ------------------------------------------------------------------------

sub rnd { $_[int rand @_] }
sub rbytes { my $n = shift; join '', map { chr(1 + int rand 255) } 1 .. $n }
sub runicode {
    my $n = shift;
    my $s = join '', map {
        my $c = int rand 0x10FFFF;
        $c = 0x41 + $c % 26 if $c >= 0xD800 && $c <= 0xDFFF;
        chr $c;
    } 1 .. $n;
    utf8::encode($s);
    return $s;
}
sub rdigits { my $n = shift; join '', map { int rand 10 } 1 .. $n }

# user ids as they are meant (bytes), before any encoding
my @ids = (
    '', '0', '00', '01', '007', '-1', '-0', '+1', ' 1', '1 ', "1\t", '1.0', '1.', '.1', '1e3', '1E3',
    '0x1f', '0b1', '1_000', '1,000', "1\x00", "\x001", "1\x002", '9007199254740991', '9007199254740992',
    '9007199254740993', '18446744073709551615', '18446744073709551616', '-9223372036854775808',
    '9' x 17, '9' x 100, '1' x 1000, 'NaN', 'Infinity', '-Infinity', 'null', 'true', '[]', '{}',
    '１２', "\xd9\xa1\xd9\xa2", "\xef\xbc\x91", "1\xc2\xa0", "\xff\xfe", "\xc3\x28", "\xed\xa0\x80",
    '%31', '1%00', '%', '%%', '%zz', "1\n2", "1\r\n2", '1/2', '1?2', '1#2', '1&2', '1;2', '1=2', '..', '.',
    @INJECTIONS,
);
push @ids, rdigits(1 + int rand 18) for 1 .. 60 * $N;
push @ids, '-' . rdigits(1 + int rand 18) for 1 .. 10 * $N;
push @ids, rbytes(1 + int rand 40) for 1 .. 40 * $N;
push @ids, runicode(1 + int rand 12) for 1 .. 30 * $N;
push @ids, rdigits(3) . rnd("\x00", '%', ' ', "\xff", 'e', '.', '-') . rdigits(2) for 1 .. 20 * $N;

my @nonexistent = map { sprintf '%08x-%04x-4%03x-8%03x-%012x', int rand 2**32, int rand 2**16,
                        int rand 4096, int rand 4096, int rand 2**40 } 1 .. 20;

# a path segment for a capture location: what nginx decodes it to, if that is
# certain (no '/', '?', '#', '%', '.', NUL, CR/LF after decoding; not empty)
sub segment {
    my ($v) = @_;
    my $mode = int rand 3;
    my $raw = $mode == 0 ? pct($v) : $mode == 1 ? pct_all($v)
            : join '', map { /[A-Za-z0-9\-_~]/ || ord($_) >= 0x80 ? $_ : sprintf '%%%02X', ord } split //, $v;
    my $certain = length($v) && $v !~ m{[/?#%.\x00\r\n]};
    return ($raw, $certain ? $v : undef);
}

# --- 1. user ids, from everywhere a user id can come from ---------------------------

for my $v (@ids) {
    my $nx = rnd(@nonexistent);

    # $arg_user_id sees the raw text: percent-encoding is not decoded
    for my $raw (pct($v), (length $v < 60 && $v !~ /[\x00-\x20\x7f#%&+]/ ? ($v) : ())) {
        my $valid = valid_user_id($raw);
        run("tickets ?user_id=", request('GET', "/t?user_id=$raw"),
            $valid ? { ok => tickets_ok($raw, { versions => 'all' }) }
                   : { status => 400, code => 'invalid_user_id' });
        run("pass ?user_id=", request('GET', "/p?user_id=$raw&uuid=$nx"),
            $valid ? { status => 404, code => 'not_found' } : { status => 400, code => 'invalid_user_id' });
    }

    # regex captures of the path: nginx decodes the path first
    my ($seg, $dec) = segment($v);
    my $expect = !defined $dec ? { any4xx => 1 }
               : valid_user_id($dec) ? { status => 404, code => 'not_found' }
               : { status => 400, code => 'invalid_user_id' };
    run("pass /users/ID/", request('GET', "/users/$seg/passes/$nx"), $expect);

    $expect = !defined $dec ? { any4xx => 1 }
            : valid_user_id($dec) ? { status => 400, code => 'invalid_body' }
            : { status => 400, code => 'invalid_user_id' };
    run("ingest /ingest/ID", request('POST', "/ingest/$seg", body => '{}',
                                     headers => ['Content-Type' => 'application/json']), $expect);

    $expect = !defined $dec ? { any4xx => 1 }
            : valid_user_id($dec) && $dec != 1001 ? { ok => sub { $_[0]{status} == 204 ? undef : "status $_[0]{status}" } }
            : valid_user_id($dec) ? { any4xx => 1 }
            : { status => 400, code => 'invalid_user_id' };
    next if defined $dec && valid_user_id($dec) && $dec == 1001;
    run("purge /purge/ID", request('DELETE', "/purge/$seg"), $expect);

    # a header: raw bytes; nginx refuses NUL, CR and LF itself
    if ($v !~ /[\x00\r\n]/) {
        (my $h = $v) =~ s/^[ \t]+|[ \t]+$//g;
        my $certain = $v !~ /[\x00-\x1f\x7f]/;
        run("tickets X-User-Id", request('GET', '/th', headers => ['X-User-Id' => $v]),
            !$certain ? { ok => \&ok_or_4xx }
            : valid_user_id($h) ? { ok => tickets_ok($h, { versions => 'all' }) }
            : { status => 400, code => 'invalid_user_id' });
    }
}
my $ids_done = $count{total};
note "user ids: $ids_done requests";

# --- 2. pass uuids ------------------------------------------------------------------------

my @uuids = (
    '', uuid(100), uc uuid(100), uuid(999), uuid(200), substr(uuid(100), 0, 35), uuid(100) . '0',
    uuid(100) . "\x00", "\x00" . uuid(100), join('', split /-/, uuid(100)), '{' . uuid(100) . '}',
    'urn:uuid:' . uuid(100), uuid(100) =~ s/-/_/gr, uuid(100) =~ s/^./g/r, uuid(100) =~ s/-/--/r,
    (uuid(100) =~ s/^(.{8})-/$1/r) . '-', ' ' . substr(uuid(100), 1), "\xef\xbc\x90" . substr(uuid(100), 3),
    (join '', map { "\xef\xbc\x91" } 1 .. 12), '0' x 36, '-' x 36, 'f' x 36, 'x' x 10000, '%',
    uuid(100) =~ s/a/%41/r, @INJECTIONS,
);
push @uuids, join '', map { rnd(0 .. 9, 'a' .. 'f', 'A' .. 'F', '-', 'g', 'z', "\xff", '%', '.') } 1 .. 36
    for 1 .. 80 * $N;
push @uuids, rbytes(36) for 1 .. 30 * $N;
push @uuids, runicode(9) for 1 .. 20 * $N;

for my $v (@uuids) {
    # $arg_uuid: raw text
    for my $raw (pct($v), ($v !~ /[\x00-\x20\x7f#%&+]/ ? ($v) : ())) {
        my $valid = valid_uuid($raw);
        my $exists = $valid && $status_of{lc $raw};
        run("pass ?uuid=", request('GET', "/p?user_id=1001&uuid=$raw"),
            $exists ? { ok => sub { $_[0]{status} == 200 ? undef : "status $_[0]{status}" } }
            : $valid ? { status => 404, code => 'not_found' }
            : { status => 400, code => 'invalid_pass_uuid' });
    }
    my ($seg, $dec) = segment($v);
    my $exists = defined $dec && valid_uuid($dec) && $status_of{lc $dec};
    run("pass /passes/UUID", request('GET', "/users/1001/passes/$seg"),
        !defined $dec ? { any4xx => 1 }
        : $exists ? { ok => sub { $_[0]{status} == 200 ? undef : "status $_[0]{status}" } }
        : valid_uuid($dec) ? { status => 404, code => 'not_found' }
        : { status => 400, code => 'invalid_pass_uuid' });
    # the same uuid for a user who does not own it
    if (defined $dec && valid_uuid($dec)) {
        run("pass of another user", request('GET', "/users/1002/passes/$seg"),
            lc $dec eq uuid(200) ? { ok => sub { $_[0]{status} == 200 ? undef : "status $_[0]{status}" } }
                                 : { status => 404, code => 'not_found' });
    }
}
my $uuids_done = $count{total} - $ids_done;
note "uuids: $uuids_done requests";

# --- 3. status and version arguments --------------------------------------------------

my @elems = (@statuses, '', ' ', 'active ', 'ACTIVE', 'x' x 32, 'x' x 33, "\x00", "a\x00", "\x1f", "\x7f",
             "\xff", "\xc3\x28", "\xe9", 'a%2Cb', '%', '%zz', '%4', '%%41', '%2', '+', '%20', '%2B',
             @INJECTIONS);
# ('%61%6c%6c', "all" with every byte encoded, has a test of its own below)
my @vers = ('3', '4', 'all', 'ALL', 'All', '', '0', '5', '34', '3,4', '-3', '3.0', ' 3', '%33', '%34', '%61ll',
            '%61l%6c', '%', '%3', '%G3', "3\x00", '%00', '3%00', @INJECTIONS[0 .. 5]);
my @queries;
for (1 .. 500 * $N) {
    my @st = map { my $e = rnd(@elems); rand() < 0.5 ? pct($e) : rand() < 0.5 ? pct_all($e)
                   : $e =~ /[\x00-\x20\x7f#&]/ ? pct($e) : $e } 1 .. 1 + int rand 4;
    my $st = join ',', @st;
    my $ver = rnd(@vers);
    $ver = pct($ver) if $ver =~ /[^A-Za-z0-9%]/ || rand() < 0.2;
    $ver = 'all' if length $ver > 8 && defined ref_decode($ver) && ref_decode($ver) eq 'all';
    my @args = ('user_id=1001');
    push @args, "status=$st" if rand() < 0.85;
    push @args, "version=$ver" if rand() < 0.5;
    push @args, rnd('status=active', 'version=3', 'status=', 'x=1', 'STATUS=used') if rand() < 0.15;
    @args = sort { rand() <=> 0.5 } @args if rand() < 0.3;
    push @queries, join '&', @args;
}
# the first 150 twice: the second time from the micro-cache where it kept them
for my $q (@queries, @queries[0 .. 149]) {
    my $f = ref_filter($q);
    run("tickets ?$q", request('GET', "/t?$q"),
        $f ? { ok => tickets_ok(1001, $f) } : { status => 400, code => 'invalid_argument' });
}
note "arguments: " . (@queries + 150) . " requests";

# --- 4. ingest bodies ---------------------------------------------------------------------

# Every body here is invalid (so nothing may be written): the structures
# that parse carry a pass_uuid that is not a uuid, or break another rule.
my $u = uuid(300);
my @bodies = (
    '', ' ', "\n", '{', '}', '[', ']', '{}', '[]', '[{}]', 'null', 'true', '0', '-1', '1e999', '"x"',
    'NaN', 'Infinity', "{'pass_uuid': '$u'}", qq({"pass_uuid":"$u","status":"a",}),
    qq({"pass_uuid":"$u","status":"a"} // c), qq(/* c */{"pass_uuid":"$u","status":"a"}),
    qq({"pass_uuid":"$u","status":"a","status":"b"}), qq({"pass_uuid":"$u","pass_uuid":"$u","status":"a"}),
    qq({"pass_uuid":"$u","status":"a\\u0000b"}), qq({"pass_uuid":"$u\\u0000","status":"a"}),
    qq({"pass_uuid":"$u","status":"a","\\u0000":1}), qq({"pass_uuid":"$u","status":"a","payload":"\\u0000"}),
    qq({"pass_uuid":"$u","status":"a\x00b"}), qq({"pass_uuid":"$u","status":"\xc3\x28"}),
    qq({"pass_uuid":"$u","status":"\xc0\xaf"}), qq({"pass_uuid":"$u","status":"\xed\xa0\x80"}),
    qq({"pass_uuid":"$u","status":"\\ud800"}), qq({"pass_uuid":"$u","status":"\\udc00\\ud800"}),
    qq({"pass_uuid":"$u","status":"a","payload":"\xff"}), qq({"pass_uuid":"$u","status":"a","\xff":1}),
    qq(\xef\xbb\xbf{"pass_uuid":"$u","status":"a"}), qq(\xff\xfe{\x00"\x00),
    qq({"pass_uuid":"$u","status":"a","timestamp":1e400}), qq({"pass_uuid":"$u","status":"a","timestamp":-1}),
    qq({"pass_uuid":"$u","status":"a","timestamp":99999999999999999999}),
    qq({"pass_uuid":"$u","status":"a","free_ticket_status":-129}),
    qq({"pass_uuid":"$u","status":"a","version":"4"}), qq({"pass_uuid":"$u","status":"a","version":3.5}),
    qq({"pass_uuid":"$u","status":"a","payload_hash":"${\ ('h' x 65)}"}),
    qq({"pass_uuid":"$u","status":"${\ ('x' x 33)}"}), qq({"pass_uuid":"$u","status":"${\ ("\xc3\xa9" x 33)}"}),
    qq({"pass_uuid":"$u","status":"a\\tb"}), qq({"pass_uuid":"$u","status":"a\\u007fb"}),
    qq({"pass_uuid":"$u","status":"a","user_id":1001}), qq({"pass_uuid":"$u","status":"a","\$where":"1"}),
    qq({"pass_uuid":"$u","status":"a","\$set":{"user_id":1}}),
    qq([{"pass_uuid":"$u","status":"a"},5]), qq([{"pass_uuid":"$u","status":"a"},[]]),
    '[' . join(',', map { qq({"pass_uuid":"${\ uuid(400 + $_)}","status":"a"}) } 1 .. 6) . ']',
    '[' x 10000, '[' x 10000 . ']' x 10000, '{"a":' x 10000 . '1' . '}' x 10000,
    qq({"pass_uuid":"x","status":"a","payload":) . '[' x 3000 . ']' x 3000 . '}',
    qq({"pass_uuid":"x","status":"a","payload":) . '[' x 2000 . ']' x 2000 . '}',
    qq({"pass_uuid":"x","status":"a","payload":) . '{"a":' x 1500 . '1' . '}' x 1500 . '}',
    '"' . ('x' x 60000) . '"', '[' . join(',', (1) x 20000) . ']',
    '{' . join(',', map { qq("k$_":$_) } 1 .. 5000) . '}',
    qq({"pass_uuid":"not-a-uuid","status":"active","payload":{"big":"${\ ('y' x 60000)}"}}),
);
# the generated: mutations of a structure whose uuid can never become valid,
# random bytes, random Unicode, truncations
my $base = qq([{"pass_uuid":"not-a-uuid","status":"active","version":4,"free_ticket_status":1,)
         . qq("payload":{"a":[1,2.5,null,true,"\\u00e9"],"b":{"c":"d"}},"timestamp":1732200000000,)
         . qq("payload_hash":"${\ ('ab' x 32)}"}]);
for (1 .. 300 * $N) {
    my $b = $base;
    for (1 .. 1 + int rand 4) {
        my $pos = int rand length $b;
        my $k = int rand 4;
        if    ($k == 0) { substr($b, $pos, 1) = chr int rand 256 }
        elsif ($k == 1) { substr($b, $pos, 1 + int rand 8) = '' }
        elsif ($k == 2) { substr($b, $pos, 0) = rnd('[', ']', '{', '}', '"', ',', ':', '\\', '\\u', "\x00", "\xff", 'null', '1e309') }
        else            { substr($b, $pos, 0) = substr($b, int rand length $b, int rand 20) }
    }
    push @bodies, $b;
}
push @bodies, rbytes(1 + int rand 300) for 1 .. 60 * $N;
push @bodies, '{"pass_uuid":"' . runicode(1 + int rand 30) . '","status":"' . runicode(3) . '"}' for 1 .. 40 * $N;
push @bodies, substr(qq({"pass_uuid":"$u","status":"active","payload":{"a":[1,2]}}), 0, $_) for 0 .. 55;

my $body_n = 0;
for my $b (@bodies) {
    $body_n++;
    my $ct = rnd('application/json', 'text/plain', 'application/json; charset=latin1', 'x/y');
    run("ingest body " . length($b) . " bytes", request('POST', '/ingest/1001', body => $b,
                                                        headers => ['Content-Type' => $ct]),
        length $b ? { status => 400, code => 'invalid_body' } : { status => 400, code => 'invalid_body' });
}
# over client_max_body_size: nginx's own 413, before the module reads it
my $huge = '{"pass_uuid":"' . uuid(301) . '","status":"a","payload":"' . ('z' x 200_000) . '"}';
run('ingest 200k body', request('POST', '/ingest/1001', body => $huge), { nginx => [413] });
run('ingest 200k body, chunked', request('POST', '/ingest/1001', headers => ['Transfer-Encoding' => 'chunked'],
    body => sprintf("%x\r\n%s\r\n0\r\n\r\n", length $huge, $huge), no_length => 1), { nginx => [413] });
# a valid body, chunked, but for an invalid user: refused before reading
run('chunked, invalid user', request('POST', '/ingest/0', headers => ['Transfer-Encoding' => 'chunked'],
    body => "5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n", no_length => 1), { status => 400, code => 'invalid_user_id' });
run('chunked, bad chunk size', request('POST', '/ingest/1001', headers => ['Transfer-Encoding' => 'chunked'],
    body => "zz\r\n{}\r\n0\r\n\r\n", no_length => 1), { nginx => [400] });
run('chunked, invalid JSON', request('POST', '/ingest/1001', headers => ['Transfer-Encoding' => 'chunked'],
    body => "2\r\n[[\r\n0\r\n\r\n", no_length => 1), { status => 400, code => 'invalid_body' });
note "ingest bodies: $body_n requests";

# --- 5. methods and broken requests -------------------------------------------------

my %allow = ('/t?user_id=1001' => 'GET, HEAD', '/th' => 'GET, HEAD', '/p?user_id=1001&uuid=' . uuid(100) => 'GET, HEAD',
             '/users/1001/passes/' . uuid(100) => 'GET, HEAD', '/ingest/1001' => 'POST', '/purge/1001' => 'DELETE');
for my $path (sort keys %allow) {
    for my $m (qw(GET HEAD POST PUT DELETE PATCH OPTIONS PROPFIND MKCOL COPY MOVE LOCK UNLOCK FOO)) {
        next if $allow{$path} =~ /\b$m\b/;
        my $body = $m =~ /^(POST|PUT|PATCH)$/ ? '{}' : undef;
        my $res = run("$m $path", request($m, $path, headers => ['X-User-Id' => '1001'], body => $body),
                      $m eq 'HEAD' ? { head => 1, ok => sub { $_[0]{status} == 405 ? undef : "status $_[0]{status}" } }
                                   : { status => 405, code => 'method_not_allowed' });
        if ($res->{status} == 405 && ($res->{headers}{allow} // '') ne $allow{$path}) {
            push @fail, "$m $path: Allow '" . ($res->{headers}{allow} // '') . "', expected '$allow{$path}'";
        }
    }
}
for my $raw (
    "GET /t?user_id=1001 HTTP/1.1\r\n\r\n",                          # no Host
    "GET\r\n\r\n", "\r\n\r\n", "get /t?user_id=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /t?user_id=1\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /t?user_id=1\x01 HTTP/1.1\r\nHost: x\r\n\r\n", "GET /t?user_id=1 2 HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /users/%00/passes/x HTTP/1.1\r\nHost: x\r\n\r\n", "GET /users/1/passes/%zz HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /users/1/../../passes/x HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /t?user_id=" . ('1' x 9000) . " HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /th HTTP/1.1\r\nHost: x\r\nX-User-Id: " . ('1' x 9000) . "\r\n\r\n",
    "GET /th HTTP/1.1\r\nHost: x\r\nX-User-Id: 1\x00\r\n\r\n",
    "GET /th HTTP/1.1\r\nHost: x\r\nX-User-Id: 1\r\nX-User-Id: 2\r\n\r\n",
    "POST /ingest/1001 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
    "POST /ingest/1001 HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}",
    "POST /ingest/1001 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "GET http://localhost/t?user_id=1001 HTTP/1.1\r\nHost: x\r\n\r\n",
) {
    my $first = (split /\r\n/, $raw)[0] // '';
    run("raw: " . printable(substr $first, 0, 60), $raw =~ /Connection/ ? $raw : $raw =~ s/\r\n\r\n/\r\nConnection: close\r\n\r\n/r,
        { any4xx => 1, ok => sub {
            my $res = shift;
            return if $res->{status} >= 400 && $res->{status} < 500;
            return if $res->{status} == 200 && $raw =~ /^GET (http:\/\/localhost)?\/t\?user_id=1001 HTTP\/1\.1\r\nHost/;
            return if $res->{status} == 200 && $raw =~ /X-User-Id: 1\r\nX-User-Id: 2/;
            return if $res->{status} == 200 && $raw =~ /user_id=1001\r?\n/;
            return "status $res->{status}";
        } });
}

# SPEC 3.6: status and version are percent-decoded first, so "all" with
# every byte encoded is "all"
{
    my $res = raw_http($port, request('GET', '/t?user_id=1001&version=%61%6c%6c'));
    is $res->{status}, 200, 'version=%61%6c%6c is version=all (SPEC 3.6: decoded first)'
        or diag "$res->{status} $res->{body}";
}

# --- verdict --------------------------------------------------------------------------

my $elapsed = time - $t0;
diag sprintf "%d requests in %.1fs: %s", $count{total}, $elapsed,
    join ', ', map { "$_ x$count{$_}" } sort grep { /^status/ } keys %count;
ok $count{total} >= 3000, "thousands of hostile requests ($count{total})";
is scalar(@fail), 0, 'every answer is a 4xx with the SPEC error shape (or what valid input gets), no 5xx, no hang'
    or diag join "\n", @fail[0 .. ($#fail < 29 ? $#fail : 29)];
ok !grep({ /^status 5/ } keys %count), 'no 5xx at all';
ok $count{'cache HIT'}, "the micro-cache answered some ($count{'cache HIT'} HIT, "
    . ($count{'cache MISS'} // 0) . ' MISS)';

my $after = db_fingerprint($t);
is_deeply $after, $before, 'MySQL rows and the cache collection are unchanged';

my @alive = $t->worker_pids;
ok scalar(@alive), 'nginx workers still up';
my $log = $t->error_log;
unlike $log, qr/\[(alert|emerg)\]/, 'no alert in the error log' or diag join "\n", grep { /\[(alert|emerg)\]/ } split /\n/, $log;
my $r = raw_http($port, request('GET', '/t?user_id=1001'));
is $r->{status}, 200, 'and the module still answers';

done_testing;
