#!/usr/bin/perl
# The cache fill after a coalesced MySQL read (issue 25). A fill writes the
# rows the read kept (each lookup its own copy, out of the result buffers
# the batch shares), so lookups answered by one batched query, two of them
# for the same user, each leave the entry that user's own read would have:
# the next lookup is answered from MongoDB with the same bytes. The primary
# is frozen (SIGSTOP) with one lookup in flight on its one connection,
# while the others queue and then go as one statement.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass body_both wait_until);
use Bytemark::Load qw(send_raw read_raw http_raw freeze mysql_status);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);

# non-canonical payloads: the fill writes their canonical value
$t->sql('ALTER TABLE bytemark_pass MODIFY payload LONGTEXT NULL');

my @users = (41 .. 45);
for my $u (@users) {
    add_pass($t, user => $u, uuid => uuid($u * 10 + 1), ts => 2000, status => "a$u",
             payload_raw => qq({ "z": $u, "a": [1.0, "caf\\u00e9"] }));
    add_pass($t, user => $u, uuid => uuid($u * 10 + 2), ts => 1000, status => "b$u",
             payload => undef, hash => undef);
    add_pass($t, user => $u, uuid => uuid($u * 10 + 3), ts => 500, status => "c$u",
             version => 4, payload_raw => "not json $u");
}

my $mysql = $t->mysql_directive;
$t->start_nginx(body_both(no_mysql => 1, http => <<"EOF"), workers => 1);
bytemark_mysql $mysql pool_size=1;
bytemark_mysql_timeout 10s;
bytemark_stuck_calls 8;
EOF
my $port = $t->nginx_port;

# the worker's one connection, opened before the primary is frozen
is http_raw($port, '/t?user_id=1')->{status}, 200, 'warm-up';

sub passes_of { my ($body) = @_; $body =~ s/^\{"user_id":\d+,"timestamp":\d+,//r }

# 41 in flight; 42, 43, 43, 44, 45 queue and go as one statement
my @paths = map { "/t?user_id=$_" } 41, 42, 43, 43, 44, 45;
my $e0 = mysql_status($t, 'Com_stmt_execute');
freeze($t, 'mysql');
my @s;
for my $i (0 .. $#paths) {
    push @s, send_raw($port, $paths[$i]) or die "send: $!";
    select(undef, undef, undef, 0.3) if $i == 0;
}
select(undef, undef, undef, 1);
$t->resume_mysql;
my @r = map { read_raw($_) } @s;

is_deeply [ map { $_->{status} } @r ], [ (200) x @paths ], 'every lookup answered';
is_deeply [ map { $_->{headers}{'x-bytemark-source'} } @r ], [ ('mysql') x @paths ],
    '... by MySQL';
my $executes = mysql_status($t, 'Com_stmt_execute') - $e0;
ok $executes <= 2, "... in $executes statements: the queued lookups went as one";

# each user's entry, as the next lookup reads it
for my $i (0 .. $#paths) {
    my ($u) = $paths[$i] =~ /(\d+)$/;
    ok wait_until(sub { $t->mongo_count({ user_id => $u + 0 }) }, 5),
        "user $u: the cache was filled" or next;
    my $c = $t->get($paths[$i]);
    is $c->{headers}{'x-bytemark-source'}, 'mongo', "user $u: next from the cache";
    is passes_of($c->{content}), passes_of($r[$i]{body}),
        "user $u: byte for byte the passes MySQL answered";
}
is $t->mongo_count({ user_id => 43 }), 1, 'one entry for the user asked twice';

done_testing;
