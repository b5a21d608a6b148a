#!/usr/bin/perl
# Real MongoDB clients: the seed application's own write (Mongoose,
# findOneAndUpdate with $push and upsert, t/js/seed_writer.js) is read by the
# module, and what the module's cache fill writes reads back with the plain
# Node.js driver in the shape the seed describes.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass body_both wait_until now_ms);

my $JSON = JSON::PP->new->utf8->canonical;

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$t->start_nginx(body_both(loc => 'bytemark_cache_ttl 1h;'));

sub node {
    my ($script, @args) = @_;
    my $out = `node $Bytemark::Test::REPO/t/js/$script @{[ map { "'$_'" } @args ]} 2>&1`;
    is $?, 0, "node $script ran" or diag $out;
    return $out;
}

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

# --- the seed's write, read by the module ----------------------------------------

my $pass1 = { pass_uuid => uuid(71), timestamp => 1732200000000, status => 'active',
              free_ticket_status => 0, payload_hash => 'f' x 64,
              payload => { product => { name => 'Monthly', zones => ['A', 'B'] }, fare => 89.5 } };
my $before = now_ms();
my $w = $JSON->decode((split /\n/, node('seed_writer.js', $t->mongo_uri, $t->mongo_db, 700,
                                        $JSON->encode($pass1)))[-1]);
ok $w->{ok}, 'Mongoose wrote the entry';

my $r = $t->get('/t?user_id=700');
my $j = $t->json($r);
is_deeply [$r->{status}, src($r)], [200, 'mongo'], 'the module answers from the entry Mongoose wrote';
is $j->{timestamp}, $w->{timestamp}, 'timestamp is the Date.now() the client wrote (a double in BSON)';
ok $j->{timestamp} >= $before, '... as an integer in ms';
my $got = { %{ $j->{passes}[0] } };
like delete $got->{_id}, qr/^[0-9a-f]{24}$/, 'the ObjectId Mongoose adds to a sub-document is its hex string';
is_deeply $got, $pass1, 'the pushed pass comes back field for field';

my $pass2 = { pass_uuid => uuid(72), timestamp => 1732200000001, status => 'expired',
              free_ticket_status => 1, payload => undef, payload_hash => undef };
node('seed_writer.js', $t->mongo_uri, $t->mongo_db, 700, $JSON->encode($pass2));
$j = $t->json($t->get('/t?user_id=700'));
is_deeply [map { $_->{pass_uuid} } @{ $j->{passes} }], [uuid(71), uuid(72)], 'a second $push appends';
$r = $t->get('/users/700/passes/' . uuid(72));
is_deeply [$r->{status}, src($r), $t->json($r)->{pass}{status}], [200, 'mongo', 'expired'],
    'the pass handler finds a pass Mongoose pushed';
is $t->mongo_count({ user_id => 700 }), 1, 'one document per user';

# --- the module's fill, read back by the plain driver ---------------------------------

add_pass($t, user => 800, uuid => uuid(81), ts => 5, payload => { a => [1, 2] });
add_pass($t, user => 800, uuid => uuid(82), ts => 6, version => 4);
$r = $t->get('/t?user_id=800');
is src($r), 'mysql', 'a miss answered by MySQL';
ok wait_until(sub { $t->mongo_count({ user_id => 800 }) }), 'and filled into the cache';

my $doc = $JSON->decode(node('seed_reader.js', $t->mongo_uri, $t->mongo_db, 800));
is $doc->{user_id}, 800, 'user_id is a Number';
is $doc->{timestamp}, $t->json($r)->{timestamp}, 'timestamp is a Number (ms)';
is_deeply [map { $_->{pass_uuid} } @{ $doc->{passes} }], [uuid(81)], 'passes holds the v3 pass';
is_deeply [map { $_->{pass_uuid} } @{ $doc->{passes4} }], [uuid(82)], 'passes4 holds the v4 pass';
is_deeply $doc->{passes}[0]{payload}, { a => [1, 2] }, 'payload is a document, not a string';
is_deeply [sort keys %{ $doc->{passes}[0] }],
          [qw(free_ticket_status pass_uuid payload payload_hash status timestamp)], 'the seed\'s pass fields';

# and the seed application can keep writing to an entry the module filled
node('seed_writer.js', $t->mongo_uri, $t->mongo_db, 800, $JSON->encode({ pass_uuid => uuid(83), status => 'new' }));
$j = $t->json($t->get('/t?user_id=800'));
is_deeply [map { $_->{pass_uuid} } @{ $j->{passes} }], [uuid(81), uuid(83)],
    'a seed write on top of a filled entry is served';

done_testing;
