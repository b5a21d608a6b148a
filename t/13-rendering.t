#!/usr/bin/perl
# The bytes of an answer: passes are written once as canonical JSON (keys
# sorted, compact, JavaScript numbers), whether they come from a MySQL row
# (payload text copied when already canonical, re-encoded otherwise) or from
# the cache document's BSON. The same passes must give the same bytes and
# the same ETag from both sources, so clients and caches keep their copies.

use strict;
use warnings;
use utf8;

use Test::More;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass body_both wait_until);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$t->start_nginx(body_both());

# payloads as other writers leave them: not JSON-checked, not canonical
$t->sql('ALTER TABLE bytemark_pass MODIFY payload LONGTEXT NULL');

my $user = 300;
my %payload = (
    messy     => '{ "s" : "caf\u00e9 \/ \"q\"", "b": 1, "a": [1.0, 2.5, -0.0, 1e2, -0] }',
    canonical => '{"a":[1,2.5,0,100,0],"b":1,"s":"café / \"q\""}',
    controls  => '"tab\there\u0001 \u001f end"',
    real      => '0.1',
    huge      => '12345678901234567890',
    dup       => '{"a":1,"a":2}',
    exp       => '[1.5e300, 2.5E-7, 9007199254740993.0]',
    notjson   => 'plain text, {not json',
);
my @order = sort keys %payload;
my %uuid;
my $i = 0;
for my $k (@order) {
    $uuid{$k} = uuid(100 + $i);
    add_pass($t, user => $user, uuid => $uuid{$k}, ts => 1000 + $i++,
             status => $k eq 'canonical' ? 'canon' : 'active',
             payload_raw => $payload{$k});
}

# the payload's text in a raw body: the pass object is canonical, so the
# payload sits between "payload": and ,"payload_hash"
sub raw_payload {
    my ($body, $uuid) = @_;
    $body =~ /"pass_uuid":"\Q$uuid\E","payload":(.*?),"payload_hash":/s
        or return undef;
    return $1;
}

my $r = $t->get("/t?user_id=$user");
is $r->{status}, 200, 'MySQL answer';
is $r->{headers}{'x-bytemark-source'}, 'mysql', 'from MySQL';
my $mysql_body = $r->{content};
my $etag = $r->{headers}{etag};
utf8::decode(my $text = $mysql_body);

is raw_payload($text, $uuid{messy}), '{"a":[1,2.5,0,100,0],"b":1,"s":"café / \"q\""}',
    'a messy payload is re-encoded: keys sorted, no blanks, 1.0 -> 1, -0.0 -> 0, 1e2 -> 100, '
    . '\/ and \u00e9 unescaped';
is raw_payload($text, $uuid{canonical}), $payload{canonical},
    'a canonical payload comes out as it is';
is raw_payload($text, $uuid{controls}), '"tab\there\u0001 \u001F end"',
    'control characters: short escapes, else \u00XX in upper case';
is raw_payload($text, $uuid{real}), '0.10000000000000001', 'reals are written as %.17g';
is raw_payload($text, $uuid{huge}), '"12345678901234567890"',
    'an integer beyond 64 bits is not JSON we can keep: embedded as a string';
is raw_payload($text, $uuid{dup}), '{"a":2}', 'duplicate keys: the last one wins';
is raw_payload($text, $uuid{exp}), '[1.5000000000000001e300,2.4999999999999999e-7,9007199254740992]',
    'exponents without "+" or leading zeros; integral reals become integers';
is raw_payload($text, $uuid{notjson}), '"plain text, {not json"', 'text that is not JSON is a string';
unlike $mysql_body, qr/\s"|":\s|,\s"/, 'no blanks between tokens';

my $j = $t->json($r);
is scalar(@{ $j->{passes} }), scalar(@order), 'every row is a pass';

# --- the same bytes from the cache -----------------------------------------

ok wait_until(sub { my @d = $t->mongo_find({ user_id => $user }); @d ? 1 : undef }, 5),
    'the answer filled the cache';

$r = $t->get("/t?user_id=$user");
is $r->{headers}{'x-bytemark-source'}, 'mongo', 'next: from the cache';
(my $a = $mysql_body) =~ s/^\{"user_id":\d+,"timestamp":\d+,//;
(my $b = $r->{content}) =~ s/^\{"user_id":\d+,"timestamp":\d+,//;
is $b, $a, 'byte for byte the same passes from the cache document';
is $r->{headers}{etag}, $etag, 'and the same ETag';

# --- filters and single passes pick the same bytes ---------------------------

$r = $t->get("/t?user_id=$user&status=canon");
utf8::decode(my $f = $r->{content});
my ($whole) = $text =~ /(\{"free_ticket_status":-?\d+,"pass_uuid":"$uuid{canonical}".*?"timestamp":\d+\})/;
ok defined $whole, 'the pass in the whole answer';
like $f, qr/,"passes":\[\Q$whole\E\],"passes4":\[\]\}$/,
    'a status filter keeps just that pass, the same bytes';
isnt $r->{headers}{etag}, $etag, 'with its own ETag';

for my $k (qw(messy controls)) {
    $r = $t->get("/users/$user/passes/$uuid{$k}");
    is $r->{status}, 200, "pass $k: 200";
    utf8::decode(my $p = $r->{content});
    is raw_payload($p, $uuid{$k}), raw_payload($text, $uuid{$k}),
        "pass $k: the same payload bytes as in the tickets answer";
}

# --- a large object costs n log n, not n^2 -----------------------------------
# An ingest keeps a payload's key order; keys in reverse order were the worst
# case of a plain insertion sort (tens of seconds for 100 000 keys, far past
# the lookup's time budget, so the answer would have come from MySQL).

if ($t->mongo_kind eq 'ferretdb') {
    # FerretDB 1.24 itself needs 8-9 s to return (and 14 s to store) one
    # 60 000-key document, far past any lookup budget: nothing to measure
    # of the module's side there.
    note 'skipped on FerretDB: it takes ~9 s to return a 60 000-key document';
    done_testing;
    exit 0;
}

my $nkeys = 60000;
my %big = map { (sprintf('k%05d', $_) => $_) } 0 .. $nkeys - 1;
my $big_json = '{' . join(',', map { sprintf('"k%05d":%d', $_, $_) }
                          reverse 0 .. $nkeys - 1) . '}';
$t->mongo_insert(sprintf('{"user_id":{"$numberLong":"301"},"timestamp":{"$numberLong":"%d"},'
    . '"passes":[{"pass_uuid":"%s","status":"active","payload":%s}],"passes4":[]}',
    Bytemark::Data::now_ms(), uuid(301), $big_json));
$r = $t->get('/t?user_id=301');
is $r->{status}, 200, 'an entry with a 60 000-key payload: 200';
is $r->{headers}{'x-bytemark-source'}, 'mongo', 'from the cache, within the time budget';
like $r->{content}, qr/"payload":\{"k00000":0,"k00001":1,/, 'its keys sorted';
is_deeply $t->json($r)->{passes}[0]{payload}, \%big, 'all of them';

done_testing;
