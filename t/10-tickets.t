#!/usr/bin/perl
# bytemark_tickets (SPEC 3.1) against real MariaDB, MongoDB and nginx:
# resolution order, cache fill, filters, ETag/304, HEAD and input errors.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass pass_row cache_entry body_both wait_until
                      now_ms);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
# /t leaves bytemark_cache_control at its default; the server below the
# standard one sets it per location (SPEC 3.1: "unless the location says
# otherwise")
my $conf = body_both(loc => 'bytemark_cache_ttl 60s;');
$conf =~ s{(    location = /static)}{    location = /t-public {
        bytemark_user_id \$arg_user_id;
        bytemark_cache_control "public, max-age=5";
        bytemark_tickets;
    }
    location = /t-off {
        bytemark_user_id \$arg_user_id;
        bytemark_cache_control off;
        bytemark_tickets;
    }
$1} or die 'no /static location in body_both';
$t->start_nginx($conf);

sub tickets {
    my ($q, $h) = @_;
    my $r = $t->get("/t?$q", $h);
    my $j = ($r->{content} // '') =~ /^\{/ ? $t->json($r) : undef;
    return ($r, $j);
}

sub uuids { [ map { $_->{pass_uuid} } @{ $_[0] } ] }

# --- a miss goes to MySQL, then the cache is filled --------------------------

# MariaDB checks JSON columns; a legacy table (or MySQL import) may not
$t->sql('ALTER TABLE bytemark_pass MODIFY payload LONGTEXT NULL');

my @rows = (
    add_pass($t, user => 100, uuid => uuid(1), ts => 1000, status => 'active'),
    add_pass($t, user => 100, uuid => uuid(2), ts => 3000, status => 'expired',
             free => 1, payload => undef, hash => undef),
    add_pass($t, user => 100, uuid => uuid(3), ts => 2000, status => 'active',
             version => 4, payload => { nested => [1, { a => 'b' }], n => 1.5 }),
    add_pass($t, user => 100, uuid => uuid(4), ts => 2000, status => 'active',
             payload_raw => 'not json {'),
    add_pass($t, user => 101, uuid => uuid(5), status => 'active'),
);

my $before = now_ms();
my ($r, $j) = tickets('user_id=100');
is $r->{status}, 200, 'miss: 200';
is $r->{headers}{'x-bytemark-source'}, 'mysql', 'miss: answered by MySQL';
like $r->{headers}{'content-type'}, qr{^application/json}, 'JSON content type';
is_deeply [sort keys %$j], [qw(passes passes4 timestamp user_id)], 'exactly the four keys';
is $j->{user_id}, 100, 'user_id';
ok $j->{timestamp} >= $before && $j->{timestamp} <= now_ms(), 'timestamp is the time of the read';
is_deeply uuids($j->{passes}), [uuid(1), uuid(4), uuid(2)], 'v3 passes ordered by timestamp, then id';
is_deeply uuids($j->{passes4}), [uuid(3)], 'v4 passes in passes4';
is_deeply $j->{passes}[0], $rows[0], 'a row becomes the SPEC pass object';
is_deeply $j->{passes}[2], $rows[1], 'NULL payload and hash are null';
is $j->{passes}[1]{payload}, 'not json {', 'payload that is not JSON is a string';
is_deeply $j->{passes4}[0]{payload}, { nested => [1, { a => 'b' }], n => 1.5 },
    'JSON payload is embedded as JSON';
my $etag = $r->{headers}{etag};
like $etag, qr/^"[0-9a-f]{40}"$/, 'strong ETag';

my @docs = wait_until(sub { my @d = $t->mongo_find({ user_id => 100 }); @d ? \@d : undef }, 5)
    ? $t->mongo_find({ user_id => 100 }) : ();
is scalar(@docs), 1, 'the cache entry was filled after the MySQL answer';
is $t->plain($docs[0]{timestamp}), $j->{timestamp}, 'the fill carries the read time';
ok !exists $docs[0]{bytemark_incomplete}, 'the fill is not marked incomplete';

($r, my $j2) = tickets('user_id=100');
is $r->{headers}{'x-bytemark-source'}, 'mongo', 'next request: a cache hit';
is_deeply $j2, $j, 'with the same body';
is $r->{headers}{etag}, $etag, 'and the same ETag, whichever source answered';

# --- 304, HEAD ----------------------------------------------------------------

$r = $t->get('/t?user_id=100', { 'If-None-Match' => $etag });
is $r->{status}, 304, 'matching If-None-Match: 304';
is $r->{content} // '', '', '304 has no body';
$r = $t->get('/t?user_id=100', { 'If-None-Match' => '"other", ' . $etag });
is $r->{status}, 304, 'a list containing the ETag matches too';
$r = $t->get('/t?user_id=100', { 'If-None-Match' => '"0000"' });
is $r->{status}, 200, 'other ETag: 200';

$r = $t->http('HEAD', '/t?user_id=100');
is $r->{status}, 200, 'HEAD: 200';
is $r->{content} // '', '', 'HEAD: no body';
is $r->{headers}{etag}, $etag, 'HEAD: same ETag';

# --- Cache-Control: one user's passes are private -------------------------------

$r = $t->get('/t?user_id=100');
is $r->{headers}{'cache-control'}, 'private', '200: Cache-Control: private by default';
$r = $t->get('/t?user_id=100', { 'If-None-Match' => $etag });
is_deeply [$r->{status}, $r->{headers}{'cache-control'}], [304, 'private'],
    '304: Cache-Control: private too';
$r = $t->get('/t?user_id=1%00');
is_deeply [$r->{status}, $r->{headers}{'cache-control'}], [400, undef],
    'an error keeps no Cache-Control of its own';
$r = $t->get('/t-public?user_id=100');
is_deeply [$r->{status}, $r->{headers}{'cache-control'}], [200, 'public, max-age=5'],
    'bytemark_cache_control in a location replaces the default';
$r = $t->get('/t-off?user_id=100');
is_deeply [$r->{status}, exists $r->{headers}{'cache-control'}], [200, ''],
    'bytemark_cache_control off: no Cache-Control';
for my $bad (['"private\\r\\nX-Evil: 1"', qr/"bytemark_cache_control" directive has a control character/],
             ['""', qr/"bytemark_cache_control" directive is empty/]) {
    my ($rc, $out) = $t->nginx_test(body_both(loc => "bytemark_cache_control $bad->[0];"));
    ok $rc != 0 && $out =~ $bad->[1], "nginx -t refuses bytemark_cache_control $bad->[0]" or diag $out;
}

# --- fresh entries from MongoDB, exactly as stored ------------------------------

my $cpass = { pass_uuid => uuid(20), timestamp => { '$numberLong' => '1732200000000' },
              status => 'active', free_ticket_status => 0, payload => { x => 1 },
              payload_hash => 'h', extra_field => { '$oid' => '0123456789abcdef01234567' },
              when => { '$date' => { '$numberLong' => '1732200000123' } },
              ratio => { '$numberDouble' => '0.25' }, ok => JSON::PP::true };
$t->mongo_insert(cache_entry(200, ts => now_ms(), passes => [$cpass],
    extra => { passesLog => [{ server_time => 'x', data => {} }], other_top => 5 }));
($r, $j) = tickets('user_id=200');
is $r->{headers}{'x-bytemark-source'}, 'mongo', 'fresh entry: mongo';
is_deeply [sort keys %$j], [qw(passes passes4 timestamp user_id)],
    'log arrays and unknown top-level fields are not returned';
is_deeply $j->{passes}[0], {
    pass_uuid => uuid(20), timestamp => 1732200000000, status => 'active',
    free_ticket_status => 0, payload => { x => 1 }, payload_hash => 'h',
    extra_field => '0123456789abcdef01234567', when => '2024-11-21T14:40:00.123Z',
    ratio => 0.25, ok => JSON::PP::true,
}, 'unknown pass fields kept; ObjectId -> hex, date -> ISO-8601, numbers stay numbers';
is_deeply $j->{passes4}, [], 'missing passes4 is empty';

# user_id stored as int32 or as a double holding an integer; timestamp a double
$t->mongo_insert({ user_id => 201, timestamp => { '$numberDouble' => '' . now_ms() . '.0' },
                   passes => [{ pass_uuid => uuid(21), status => 'active' }] });
$t->mongo_insert({ user_id => { '$numberDouble' => '202.0' }, timestamp => now_ms(),
                   passes4 => [{ pass_uuid => uuid(22), status => 'active' }] });
($r, $j) = tickets('user_id=201');
is_deeply [$r->{headers}{'x-bytemark-source'}, uuids($j->{passes})], ['mongo', [uuid(21)]],
    'int32 user_id and double timestamp match';
ok $j->{timestamp} =~ /^\d+$/, 'a double holding an integer is rendered as an integer';
($r, $j) = tickets('user_id=202');
is_deeply [$r->{headers}{'x-bytemark-source'}, uuids($j->{passes4})], ['mongo', [uuid(22)]],
    'double user_id matches';

# --- stale by ttl -> MySQL, and the fill replaces the stale entry --------------

$t->mongo_insert(cache_entry(101, ts => now_ms() - 120_000,
    passes => [{ pass_uuid => uuid(99), status => 'old' }]));
($r, $j) = tickets('user_id=101');
is $r->{headers}{'x-bytemark-source'}, 'mysql', 'stale entry (older than ttl): MySQL';
is_deeply uuids($j->{passes}), [uuid(5)], 'with MySQL passes';
ok wait_until(sub {
    my ($d) = $t->mongo_find({ user_id => 101 });
    $d && @{ $d->{passes} } == 1 && $d->{passes}[0]{pass_uuid} eq uuid(5);
}), 'the stale entry was rewritten from MySQL';
is $t->mongo_count({ user_id => 101 }), 1, 'still one entry for the user';

# --- the fill never overwrites a newer entry ------------------------------------

add_pass($t, user => 300, uuid => uuid(30));
my $future = now_ms() + 3_600_000;
$t->mongo_insert(cache_entry(300, ts => $future, passes => [{ pass_uuid => uuid(31), status => 'newer' }],
                             extra => { bytemark_incomplete => JSON::PP::true }));
($r, $j) = tickets('user_id=300');
is $r->{headers}{'x-bytemark-source'}, 'mysql', 'an incomplete entry is a miss';
is_deeply uuids($j->{passes}), [uuid(30)], 'answered from MySQL';
sleep 1;
my ($d) = $t->mongo_find({ user_id => 300 });
is $d->{passes}[0]{pass_uuid}, uuid(31), 'an entry newer than the MySQL read is not overwritten';
is $t->mongo_count({ user_id => 300 }), 1, 'and no second entry was created';

# --- filters --------------------------------------------------------------------

add_pass($t, user => 400, uuid => uuid(40), status => 'active', ts => 1);
add_pass($t, user => 400, uuid => uuid(41), status => 'expired', ts => 2);
add_pass($t, user => 400, uuid => uuid(42), status => 'a,b', ts => 3, version => 4);
add_pass($t, user => 400, uuid => uuid(43), status => 'Active', ts => 4, version => 4);
add_pass($t, user => 400, uuid => uuid(44), status => 'two words', ts => 5);

for my $src (qw(mysql mongo)) {
    ($r, $j) = tickets('user_id=400&status=active');
    is $r->{headers}{'x-bytemark-source'}, $src, "filters on a $src answer";
    is_deeply [uuids($j->{passes}), uuids($j->{passes4})], [[uuid(40)], []],
        "$src: status filter is exact and case-sensitive";
    ($r, $j) = tickets('user_id=400&status=expired,Active');
    is_deeply [uuids($j->{passes}), uuids($j->{passes4})], [[uuid(41)], [uuid(43)]],
        "$src: several statuses";
    ($r, $j) = tickets('user_id=400&status=a%2Cb');
    is_deeply [uuids($j->{passes}), uuids($j->{passes4})], [[], [uuid(42)]],
        "$src: %2C inside an element is a comma in the value";
    ($r, $j) = tickets('user_id=400&status=two%20words');
    is_deeply uuids($j->{passes}), [uuid(44)], "$src: percent-decoded status";
    ($r, $j) = tickets('user_id=400&status=two+words');
    is_deeply uuids($j->{passes}), [], "$src: + is not a space";
    ($r, $j) = tickets('user_id=400&version=3');
    is_deeply [sort keys %$j], [qw(passes timestamp user_id)], "$src: version=3 has only passes";
    ($r, $j) = tickets('user_id=400&version=4&status=a%2cb');
    is_deeply [[sort keys %$j], uuids($j->{passes4})], [[qw(passes4 timestamp user_id)], [uuid(42)]],
        "$src: version=4 has only passes4, and filters combine";
    ($r, $j) = tickets('user_id=400&version=all&status=nothing');
    is_deeply [$r->{status}, $j->{passes}, $j->{passes4}], [200, [], []], "$src: filter to nothing";
    wait_until(sub { $t->mongo_count({ user_id => 400 }) });
}
my ($r1) = tickets('user_id=400&version=3');
my ($r2) = tickets('user_id=400&version=4');
isnt $r1->{headers}{etag}, $r2->{headers}{etag}, 'the ETag follows the returned arrays';

# --- a user with no rows -----------------------------------------------------------

($r, $j) = tickets('user_id=9007199254740991');
is_deeply [$r->{status}, $r->{headers}{'x-bytemark-source'}, $j->{passes}, $j->{passes4}, $j->{user_id}],
          [200, 'mysql', [], [], 9007199254740991], 'unknown user: 200 with empty arrays (2^53-1 accepted)';

# --- input errors -------------------------------------------------------------------

sub error_is {
    my ($res, $status, $code, $name) = @_;
    my $body = eval { $t->json($res) } || {};
    ok $res->{status} == $status && ($body->{error} // '') eq $code
       && join(',', sort keys %$body) eq 'error,message', $name
        or diag "got $res->{status} $res->{content}";
}

for my $bad ('', 'user_id=', 'user_id=0', 'user_id=0123', 'user_id=-5', 'user_id=%2B5',
             'user_id=1e3', 'user_id=12a', 'user_id=9007199254740992',
             'user_id=99999999999999999999', 'user_id=%31%32', 'user_id=+12', 'user_id=1%00') {
    my ($res) = tickets($bad);
    error_is($res, 400, 'invalid_user_id', "invalid user id: '$bad'");
}

for my $bad ('status=', 'status=a,,b', 'status=,a', 'status=a,', 'status=' . ('x' x 33),
             'status=%zz', 'status=a%2', 'status=%00', 'status=a%0Ab', 'status=%7F',
             'version=5', 'version=', 'version=ALL', 'version=3,4', 'version=%33x') {
    my ($res) = tickets("user_id=100&$bad");
    error_is($res, 400, 'invalid_argument', "invalid argument: '$bad'");
}
my ($ok32) = tickets('user_id=100&status=' . ('x' x 32));
is $ok32->{status}, 200, 'a 32-byte status is fine';
my ($okv) = tickets('user_id=100&version=%33');
is $okv->{status}, 200, 'version is percent-decoded';

for my $m (qw(POST PUT DELETE PATCH)) {
    my $res = $t->http($m, '/t?user_id=100', undef, '{}');
    error_is($res, 405, 'method_not_allowed', "$m: 405");
    is $res->{headers}{allow}, 'GET, HEAD', "$m: Allow header";
}

# --- timestamps and the ttl boundary -------------------------------------------------

$t->mongo_insert(cache_entry(500, ts => now_ms() - 50_000, passes => [{ pass_uuid => uuid(50), status => 'c' }]));
($r, $j) = tickets('user_id=500');
is $r->{headers}{'x-bytemark-source'}, 'mongo', 'an entry younger than the ttl is fresh';

# --- an entry whose timestamp is not a number is a miss, and the fill repairs it --------
# (SPEC 3.1: a string or a missing timestamp makes the entry malformed,
# whatever the ttl; the fill's conditional write must match such an entry)

for my $c (['a string', 700, { timestamp => '2024-11-21' }], ['missing', 701, {}]) {
    my ($what, $u, $ts) = @$c;
    add_pass($t, user => $u, uuid => uuid($u), status => 'db');
    $t->mongo_insert({ user_id => $u, %$ts, passes => [{ pass_uuid => uuid($u), status => 'cached' }],
                       passes4 => [] });
    my ($r1, $j1) = tickets("user_id=$u");
    is_deeply [$r1->{status}, $r1->{headers}{'x-bytemark-source'}, $j1->{passes}[0]{status}],
        [200, 'mysql', 'db'], "timestamp $what: a miss, MySQL answers";
    ok wait_until(sub { my ($d) = $t->mongo_find({ user_id => $u });
                        $d && ref $d->{timestamp} eq 'HASH' && $d->{timestamp}{'$numberLong'} }, 5),
        "timestamp $what: the fill replaced the entry";
    my ($r2, $j2) = tickets("user_id=$u");
    is_deeply [$r2->{headers}{'x-bytemark-source'}, $j2->{passes}[0]{status}], ['mongo', 'db'],
        "timestamp $what: then the repaired entry answers";
}

$t->stop_nginx;
unlike $t->error_log, qr/\[(alert|crit|emerg)\]/, 'no alerts in the error log';

done_testing;
