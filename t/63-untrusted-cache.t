#!/usr/bin/perl
# Cache documents written by someone else are untrusted input too (issue 7):
# wrong types (passes not an array, passes4 a string, user_id a string, a
# pass that is not an object, a pass without pass_uuid, timestamp a string or
# out of every range), deeply nested payloads, huge arrays, every exotic BSON
# type. No worker ever crashes (the harness fails the test on a crashed worker
# or a sanitizer report); with MySQL configured the lookup answers from MySQL
# (X-Bytemark-Source: mysql), with MongoDB alone it is a clean 500 internal
# with the SPEC error shape; and the error log says what was wrong.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(time);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid pass_row now_ms);
use Bytemark::Hostile qw(raw_http request check_error);

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);

# Both servers read the same collection; fills are off so that every bad
# document stays as it was written for every request of the test.
$t->start_nginx(<<'EOF');
bytemark_mongo_uri %%MONGO_URI%%;
bytemark_mongo_collection %%MONGO_COLL%%;
bytemark_mysql %%MYSQL%%;
bytemark_cache_fill off;
bytemark_mongo_timeout 10s;    # 10000 passes through the Python stand-in take a while
server {
    listen 127.0.0.1:%%PORT%%;
    location = /t {
        bytemark_user_id $arg_user_id;
        bytemark_tickets;
    }
    location = /tt {
        bytemark_user_id $arg_user_id;
        bytemark_cache_ttl 1h;
        bytemark_tickets;
    }
    location ~ ^/users/(\d+)/passes/(.*)$ {
        bytemark_user_id $1;
        bytemark_pass_uuid $2;
        bytemark_pass;
    }
}
EOF
my $both = $t->nginx_port;

# the same collection without MySQL: a second nginx, its own prefix
my $t2 = Bytemark::Test->new;
$t2->{mongo_kind} = $t->mongo_kind;
$t2->{mongo_port} = $t->mongo_port;
$t2->{mongo_db_name} = $t->mongo_db;
$t2->{mongo_coll_name} = $t->mongo_coll;
$t2->{mongo_uri} = $t->mongo_uri;
$t2->start_nginx(<<'EOF');
bytemark_mongo_uri %%MONGO_URI%%;
bytemark_mongo_collection %%MONGO_COLL%%;
bytemark_mongo_timeout 10s;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /t {
        bytemark_user_id $arg_user_id;
        bytemark_tickets;
    }
    location = /tt {
        bytemark_user_id $arg_user_id;
        bytemark_cache_ttl 1h;
        bytemark_tickets;
    }
    location ~ ^/users/(\d+)/passes/(.*)$ {
        bytemark_user_id $1;
        bytemark_pass_uuid $2;
        bytemark_pass;
    }
}
EOF
my $alone = $t2->nginx_port;

sub nested {
    my ($depth, $leaf) = @_;
    my $v = $leaf // 1;
    $v = $_ % 2 ? [$v] : { n => $v } for 1 .. $depth;
    return $v;
}

sub good_pass {
    my ($u, %x) = @_;
    return { pass_uuid => uuid($u), status => 'active', timestamp => { '$numberLong' => '1732000000000' },
             free_ticket_status => 0, payload => { fare => 275 }, payload_hash => 'cd' x 32, %x };
}

my $now = { '$numberLong' => '' . now_ms() };
my $u = 3000;

# [name, document (user_id added), kind, log pattern]
#   kind: malformed (MySQL answers; alone: 500), ok (the cache answers),
#         miss (not found: MySQL answers; alone: 200 with nothing)
my @cases = (
    ['passes is an object', { timestamp => $now, passes => { 0 => good_pass(0) } }, 'malformed',
     qr/cache document "passes" is not an array/],
    ['passes4 is a string', { timestamp => $now, passes4 => 'v4' }, 'malformed',
     qr/cache document "passes4" is not an array/],
    ['passes is null', { timestamp => $now, passes => undef }, 'malformed', qr/"passes" is not an array/],
    ['passes is a number', { timestamp => $now, passes => 5 }, 'malformed', qr/"passes" is not an array/],
    ['passes is binary', { timestamp => $now, passes => { '$binary' => { base64 => 'AAEC', subType => '00' } } },
     'malformed', qr/"passes" is not an array/],
    ['a pass is a number', { timestamp => $now, passes => [good_pass(0), 5] }, 'malformed',
     qr/"passes" holds a pass that is not an object/],
    ['a pass is a string', { timestamp => $now, passes4 => ['pass'] }, 'malformed', qr/"passes4" holds a pass that is not an object/],
    ['a pass is an array', { timestamp => $now, passes => [[good_pass(0)]] }, 'malformed', qr/not an object/],
    ['a pass is null', { timestamp => $now, passes => [undef] }, 'malformed', qr/not an object/],
    ['timestamp is a string', { timestamp => '2024-11-21', passes => [good_pass(0)] }, 'malformed',
     qr/cache document "timestamp" is not a number/],
    ['timestamp is a date', { timestamp => { '$date' => '2024-11-21T00:00:00Z' }, passes => [good_pass(0)] },
     'malformed', qr/"timestamp" is not a number/],
    ['payload nested 90 levels', { timestamp => $now, passes => [good_pass(0, payload => nested(90))] },
     'malformed', qr/"passes" cannot be rendered/],
    ['payload nested 200 levels', { timestamp => $now, passes => [good_pass(0, payload => nested(200))] },
     'malformed', qr/"passes" cannot be rendered/],
    ['10000 passes that are not objects', { timestamp => $now, passes => [(7) x 10000] }, 'malformed', qr/not an object/],
    ['user_id is a string', { user_id => 'USER', timestamp => $now, passes => [good_pass(0)] }, 'miss', undef],
    ['user_id is an object', { user_id => { '$gt' => 0 }, timestamp => $now, passes => [good_pass(0)] }, 'miss', undef],
    ['user_id is a double', { user_id => { '$numberDouble' => 'USER.0' }, timestamp => $now, passes => [good_pass(0)] },
     'ok', undef],
    ['no timestamp', { passes => [good_pass(0)] }, 'malformed', qr/cache document has no "timestamp"/],
    # doubles no int64 holds: served, or refused as malformed -- never an overflow
    ['timestamp is NaN', { timestamp => { '$numberDouble' => 'NaN' }, passes => [good_pass(0)] }, 'any', undef],
    ['timestamp is 1e300', { timestamp => { '$numberDouble' => '1e300' }, passes => [good_pass(0)] }, 'any', undef],
    ['timestamp is -Infinity', { timestamp => { '$numberDouble' => '-Infinity' }, passes => [good_pass(0)] }, 'any', undef],
    ['timestamp is INT64_MIN', { timestamp => { '$numberLong' => '-9223372036854775808' }, passes => [good_pass(0)] },
     'ok', undef],
    ['timestamp is INT64_MAX', { timestamp => { '$numberLong' => '9223372036854775807' }, passes => [good_pass(0)] },
     'ok', undef],
    ['timestamp is a decimal', { timestamp => { '$numberDecimal' => '1e6000' }, passes => [good_pass(0)] }, 'any', undef],
    ['a pass without pass_uuid', { timestamp => $now, passes => [{ status => 'active' }, good_pass(0)] }, 'ok', undef],
    ['pass fields of every type', { timestamp => $now, passes => [good_pass(0, pass_uuid => uuid(0),
        status => { '$regularExpression' => { pattern => 'a.*', options => 'i' } },
        free_ticket_status => { '$numberDecimal' => '1.5' }, payload_hash => { '$binary' => { base64 => '/w==', subType => '00' } })] },
     'ok', undef],
    ['bytemark_incomplete is a string', { timestamp => $now, bytemark_incomplete => 'no', passes => [good_pass(0)] }, 'any', undef],
    ['10000 passes', { timestamp => $now, passes => [good_pass(0), map { good_pass(0, pass_uuid => uuid(900000 + $_),
        status => $_ % 2 ? 'used' : 'active') } 1 .. 9999] }, 'ok', undef],
    ['an unknown field nested 90 levels', { timestamp => $now, passes => [good_pass(0)], junk => nested(90) }, 'ok', undef],
    ['payload with every BSON type', { timestamp => $now, passes => [good_pass(0, payload => {
        oid => { '$oid' => '65f0c0ffee0000000000abcd' }, date => { '$date' => { '$numberLong' => '1732200000123' } },
        dec => { '$numberDecimal' => '12.345' }, bin => { '$binary' => { base64 => 'AAH/', subType => '00' } },
        re => { '$regularExpression' => { pattern => '^a', options => 'i' } }, code => { '$code' => 'f()' },
        cws => { '$code' => 'g()', '$scope' => { x => 1 } }, ts => { '$timestamp' => { t => 1732200000, i => 7 } },
        min => { '$minKey' => 1 }, max => { '$maxKey' => 1 }, sym => { '$symbol' => 'sym' },
        undef => { '$undefined' => JSON::PP::true }, nan => { '$numberDouble' => 'NaN' },
        inf => { '$numberDouble' => 'Infinity' }, big => { '$numberDouble' => '1e300' },
        i64 => { '$numberLong' => '-9223372036854775808' }, dbl => { '$numberDouble' => '2.0' },
        ptr => { '$dbPointer' => { '$ref' => 'c', '$id' => { '$oid' => '65f0c0ffee0000000000abcd' } } },
        "\x{540d}" => "\x{1f68c}",
    })] }, 'ok', undef],
    ['operator-like and dotted keys', { timestamp => $now, passes => [good_pass(0, payload => { '$gt' => '', 'a.b' => 1 })] },
     'ok', undef],
);

# MySQL knows one pass for every user: what a fallback must answer (one
# INSERT for all); the documents go in together too, except those a server
# may refuse (operator-like keys, nesting past MongoDB's 100 levels)
my (@rows, @docs);
for my $c (@cases) {
    my $user = ++$u;
    $c->[4] = $user;
    my $row = pass_row(uuid => uuid($user), status => 'mysql-' . $user);
    push @rows, sprintf "(%d, '%s', 3, '%s', 0, '%s', '%s', %d)", $user, $row->{pass_uuid}, $row->{status},
        $JSON->encode($row->{payload}), $row->{payload_hash}, $row->{timestamp};
    my $json = $JSON->encode($c->[1]);
    $json =~ s/"USER/"$user/g;
    $json =~ s/\Q${\ uuid(0)}\E/${\ uuid($user)}/g;
    my $doc = $JSON->decode($json);
    $doc->{user_id} //= { '$numberLong' => "$user" };
    if ($c->[0] =~ /operator|200 levels|user_id is an object/) {
        # pymongo refuses '$' keys in an insert; an upsert's $set takes them
        eval { $t->mongo_insert($doc); 1 }
            or eval { $t->mongo_update({ _probe => $user }, { '$set' => $doc }, upsert => 1); 1 }
            or $c->[5] = 'the server refuses the document: ' . (grep { /\S/ && !/ at .* line \d+/ } split /\n/, $@)[-1];
    } elsif ($t->mongo_kind eq 'standin') {
        push @docs, $doc;
    } else {
        # a real server may refuse a value the stand-in stores (FerretDB
        # 1.24: NaN, and it closes the connection): that case is skipped,
        # saying what the server refused
        if (!eval { $t->mongo_insert($doc); 1 }) {
            my ($why) = $@ =~ /'errmsg': '(.{1,100})/;
            # FerretDB closes the connection on what its BSON decoder lacks;
            # its log says which type it was
            $why //= $json =~ /"NaN"/ ? 'NaN is not supported (it closes the connection)'
                   : $json =~ /numberDecimal/ ? 'Decimal128 is not supported (it closes the connection)'
                   : $json =~ /"\$code"/ ? 'JavaScript code is not supported (it closes the connection)'
                   : (grep { /\S/ && !/ at .* line \d+/ } split /\n/, $@)[-1];
            $c->[5] = $t->mongo_kind . " refuses the document: $why";
        }
    }
}
$t->sql('INSERT INTO bytemark_pass (user_id, pass_uuid, version, status, free_ticket_status, payload, '
        . 'payload_hash, timestamp) VALUES ' . join(', ', @rows));
$t->mongo_insert(\@docs) if @docs;

sub lookup {
    my ($port, $path) = @_;
    my $r = raw_http($port, request('GET', $path), timeout => 30);
    my $j = eval { $JSON->decode($r->{body}) };
    return ($r, $j);
}

for my $c (@cases) {
    my ($name, undef, $kind, $log, $user, $skip) = @$c;
    my $t0 = time;
    subtest "$name (user $user)" => sub {
        plan skip_all => $skip if $skip;
        # (10000 passes through the Python stand-in take seconds a lookup:
        # fewer lookups for those)
        my $big = $name =~ /^10000/;
        for my $path ("/t?user_id=$user", ($big ? () : ("/tt?user_id=$user"))) {
            my ($r, $j) = lookup($both, $path);
            ok $r->{status} && $r->{status} < 500, "$path: answered, no 5xx with MySQL ($r->{status})"
                or diag $r->{error} || $r->{body};
            my $src = $r->{headers}{'x-bytemark-source'} // '';
            if ($kind eq 'malformed' || $kind eq 'miss') {
                is $src, 'mysql', "$path: MySQL answers";
                is_deeply [map { $_->{pass_uuid} } @{ $j->{passes} // [] }], [uuid($user)], "$path: with MySQL's pass";
            } elsif ($kind eq 'ok') {
                like $src, $path =~ /tt/ ? qr/^(mongo|mysql)$/ : qr/^mongo$/, "$path: source $src";
            }

            my ($r2, $j2) = lookup($alone, $path);
            if ($kind eq 'malformed') {
                is check_error($r2, 500, 'internal'), undef, "$path, MongoDB alone: a clean 500 internal"
                    or diag "$r2->{status} $r2->{body}";
            } elsif ($kind eq 'miss') {
                is_deeply [$r2->{status}, $j2->{passes}], [200, []], "$path, MongoDB alone: a miss";
            } elsif ($kind eq 'ok') {
                is $r2->{status}, 200, "$path, MongoDB alone: 200" or diag $r2->{body};
            } else {
                ok $r2->{status} == 200 || !check_error($r2, 500, 'internal') || !check_error($r2, 503, 'unavailable'),
                   "$path, MongoDB alone: 200, or a clean 500 or 503 ($r2->{status})" or diag $r2->{body};
            }
        }
        if ($log) {
            like $t->error_log, qr/user $user .*$log/, 'the error log says what is wrong';
        }
        return if $big;
        my ($r, $j) = lookup($both, "/users/$user/passes/" . uuid($user));
        is $r->{status}, 200, 'pass lookup: 200 (from the cache or MySQL)' or diag $r->{body};
        if ($kind ne 'ok' && $kind ne 'any') {
            is $r->{headers}{'x-bytemark-source'}, 'mysql', 'pass lookup: from MySQL';
        }
        my ($r2) = lookup($alone, "/users/$user/passes/" . uuid($user));
        if ($kind eq 'malformed') {
            is check_error($r2, 500, 'internal'), undef, 'pass lookup, MongoDB alone: a clean 500 internal';
        } else {
            ok $r2->{status} == 200 || $r2->{status} == 404 || !check_error($r2, 500, 'internal')
               || !check_error($r2, 503, 'unavailable'),
               "pass lookup, MongoDB alone: $r2->{status}";
        }
    };
    note sprintf '%s: %.1fs', $name, time - $t0;
}

# --- what the accepted exotic documents render to (README: BSON maps to JSON) ----------

my %case = map { $_->[0] => $_ } @cases;
SKIP: {
    skip $case{'payload with every BSON type'}[5], 13 if $case{'payload with every BSON type'}[5];
    my $user = $case{'payload with every BSON type'}[4];
    my ($r, $j) = lookup($both, "/t?user_id=$user");
    my $p = $j->{passes}[0]{payload} // {};
    is $r->{headers}{'x-bytemark-source'}, 'mongo', 'every BSON type: served from the cache';
    is $p->{oid}, '65f0c0ffee0000000000abcd', 'ObjectId: its hex string';
    is $p->{date}, '2024-11-21T14:40:00.123Z', 'date: ISO-8601 UTC';
    is $p->{dec}, '12.345', 'Decimal128: a string';
    is $p->{bin}, 'AAH/', 'binary: base64';
    is_deeply $p->{re}, { '$regex' => '^a', '$options' => 'i' }, 'regex: {$regex, $options}';
    is $p->{code}, 'f()', 'code: its text';
    is_deeply $p->{ts}, { t => 1732200000, i => 7 }, 'timestamp: {t, i}';
    is_deeply [@$p{qw(min max undef nan inf)}], [undef, undef, undef, undef, undef],
        'minKey, maxKey, undefined, NaN, Infinity: null';
    is $p->{dbl}, 2, 'a double holding an integer: an integer';
    is $p->{big}, 1e300, '1e300: a real';
    is $p->{i64}, '-9223372036854775808', 'int64 minimum: exact';
    is $p->{"\x{540d}"}, "\x{1f68c}", 'Unicode keys and values';
}
SKIP: {
    my $c = $case{'operator-like and dotted keys'};
    skip $c->[5], 1 if $c->[5];
    my ($r, $j) = lookup($both, "/t?user_id=$c->[4]");
    is_deeply $j->{passes}[0]{payload}, { '$gt' => '', 'a.b' => 1 }, 'operator-like and dotted keys: plain keys';
}
{
    my $user = $case{'10000 passes'}[4];
    my ($r, $j) = lookup($both, "/t?user_id=$user&status=used");
    is_deeply [$r->{status}, $r->{headers}{'x-bytemark-source'}, scalar @{ $j->{passes} }], [200, 'mongo', 5000],
        '10000 passes: served from the cache, filtered to 5000';
    ($r, $j) = lookup($both, "/users/$user/passes/" . uuid(900000 + 9999));
    is $r->{status}, 200, '... the last of them found by uuid';
}

# --- MySQL down: a malformed entry is never served, not even as stale ---------------------

$t->stop_mysql;
{
    my $user = $case{'passes is an object'}[4];
    my ($r) = lookup($both, "/t?user_id=$user");
    is check_error($r, 503, 'unavailable'), undef, 'a malformed entry and MySQL down: 503 unavailable';
    $user = $case{'a pass is a number'}[4];
    ($r) = lookup($both, "/users/$user/passes/" . uuid($user));
    is check_error($r, 503, 'unavailable'), undef, '... for a pass lookup too';
}

ok scalar($t->worker_pids) && scalar($t2->worker_pids), 'the workers of both servers are alive';
my $log = $t->error_log . $t2->error_log;
unlike $log, qr/exited on signal|AddressSanitizer|runtime error:/, 'no crash, no sanitizer report';

done_testing;
