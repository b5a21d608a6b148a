#!/usr/bin/perl
# The status page shows the breakers and the notes of every backend: the
# default one's as before (no "upstream" label, the top-level JSON
# members), each "bytemark_upstream" block's with upstream="<name>" in
# Prometheus and under "bytemark_upstreams" in JSON, in the blocks' order.
# Two tenants on their own MariaDB and MongoDB (as t/90), a third on
# MySQL alone (no MongoDB breaker, as for the default backend); one
# tenant's MongoDB frozen opens its breaker and keeps its ingest's note,
# its MariaDB frozen opens its MySQL breaker, and the others stay closed
# and empty. Without blocks the page has neither member nor label; a name
# with a quote and a backslash is escaped in both formats.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry wait_until);

my $JSON = JSON::PP->new->utf8->canonical;

my $a = Bytemark::Test->new(mysql => 1, mongo => 1);
plan skip_all => 'needs a MongoDB it can freeze (not an external one)' unless $a->mongo_controllable;
my $b = Bytemark::Test->new(mysql => 1, mongo => 1);

my $A_URI   = $a->mongo_uri;
my $B_URI   = $b->mongo_uri;
my $A_MYSQL = $a->mysql_directive;
my $B_MYSQL = $b->mysql_directive;
my $COLL    = $a->mongo_db . '.' . $a->mongo_coll;
my $DCOLL   = $b->mongo_db . '.default_cache';

# the default backend: B's MongoDB (another collection) and MariaDB;
# tenant_c: B's MariaDB alone. tenant_a's breaker stays open long enough
# to be looked at in both formats.
my $default = "
    bytemark_mongo_uri $B_URI;
    bytemark_mongo_collection $DCOLL;
    bytemark_mysql $B_MYSQL;
";
my $blocks = "
    bytemark_upstream tenant_a {
        bytemark_mongo_uri $A_URI;
        bytemark_mongo_collection $COLL;
        bytemark_mysql $A_MYSQL;
        bytemark_mongo_timeout 300ms;
        bytemark_mysql_timeout 300ms;
        bytemark_breaker failures=2 open=10s;
    }

    bytemark_upstream tenant_b {
        bytemark_mongo_uri $B_URI;
        bytemark_mongo_collection $COLL;
        bytemark_mysql $B_MYSQL;
    }

    bytemark_upstream tenant_c {
        bytemark_mysql $B_MYSQL;
    }
";
my $server = '
    server {
        listen 127.0.0.1:%%PORT%%;
        bytemark_user_id $arg_user_id;
        bytemark_microcache off;
        location = /a { bytemark_backend tenant_a; bytemark_tickets; }
        location = /a/ingest { bytemark_backend tenant_a; bytemark_ingest; }
        location = /b { bytemark_backend tenant_b; bytemark_tickets; }
        location = /d { bytemark_tickets; }
        location = /status { bytemark_status; }
    }
';

$a->mongo_index_unique('user_id');
$a->start_nginx($default . $blocks . $server, workers => 2);

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }
sub raw { my $r = $a->get('/status' . ($_[0] ? '?format=prometheus' : '')); $r->{content} // '' }
sub status { my $r = $a->get('/status'); $r->{status} == 200 ? $JSON->decode($r->{content}) : {} }
sub ups { status()->{bytemark_upstreams} // {} }

# one line of the Prometheus text: its value, or undef when it is not there
sub series {
    my ($prom, $s) = @_;
    return $prom =~ /^\Q$s\E (\d+)$/m ? $1 : undef;
}

sub promtool_ok {
    my ($prom, $what) = @_;
    SKIP: {
        skip 'no promtool', 1 unless -x '/usr/bin/promtool';
        my $file = $a->dir . '/metrics.prom';
        open my $f, '>', $file or die $!;
        print $f $prom;
        close $f;
        my $out = `/usr/bin/promtool check metrics < $file 2>&1`;
        is $? >> 8, 0, "promtool check metrics: $what" or diag $out;
    }
}

add_pass($a, user => 1, uuid => uuid(1), status => 'a-db');
$a->mongo_insert(cache_entry(1, passes => [{ pass_uuid => uuid(1), status => 'a-cached' }]));
is src($a->get('/a?user_id=1')), 'mongo', "tenant A's cache answers";
is $a->get('/b?user_id=1')->{status}, 200, 'tenant B answers';
is $a->get('/d?user_id=1')->{status}, 200, 'the default backend answers';

# --- all closed, no notes: the shape of both formats

my $s = status();
is_deeply $s->{bytemark_breaker_open}, { mongo => 0, mysql => { 1 => 0 } },
    'JSON: the top-level breakers are the default backend\'s';
is_deeply [$s->{bytemark_notes}, ref $s->{bytemark_notes_zone_bytes}], [0, 'HASH'],
    'JSON: the top-level notes are the default backend\'s';
my $u = $s->{bytemark_upstreams} // {};
is_deeply [sort keys %$u], [qw(tenant_a tenant_b tenant_c)], 'JSON: bytemark_upstreams names every block';
is_deeply { map { $_ => $u->{$_}{bytemark_breaker_open} } keys %$u },
    { tenant_a => { mongo => 0, mysql => { 1 => 0 } },
      tenant_b => { mongo => 0, mysql => { 1 => 0 } },
      tenant_c => { mysql => { 1 => 0 } } },
    'JSON: each block\'s breakers, closed; tenant_c has no MongoDB and no mongo breaker';
my $z = $u->{tenant_b}{bytemark_notes_zone_bytes} // {};
ok $u->{tenant_b}{bytemark_notes} == 0 && defined $z->{used} && $z->{used} + $z->{free} == 1024 * 1024,
    'JSON: each block\'s notes and its own 1m zone\'s bytes' or diag explain $u->{tenant_b};
my $text = raw(0);
like $text, qr/"bytemark_upstreams":\{"tenant_a":\{.*\},"tenant_b":\{.*\},"tenant_c":\{.*\}\}\}\n\z/,
    'JSON: the blocks in their configuration order, the last member';

my $prom = raw(1);
for my $fam (qw(bytemark_breaker_open bytemark_notes bytemark_notes_zone_bytes)) {
    is scalar(() = $prom =~ /^# TYPE \Q$fam\E gauge$/mg), 1, "Prometheus: one # TYPE $fam";
    is scalar(() = $prom =~ /^# HELP \Q$fam\E /mg), 1, "Prometheus: one # HELP $fam";
}
is_deeply [ map { series($prom, $_) } 'bytemark_breaker_open{backend="mongo"}',
            'bytemark_breaker_open{backend="mysql",server="1"}', 'bytemark_notes',
            'bytemark_notes{upstream="tenant_a"}', 'bytemark_notes{upstream="tenant_c"}' ],
    [0, 0, 0, 0, 0], 'Prometheus: the default\'s series without a label, the blocks\' with theirs';
ok !defined series($prom, 'bytemark_breaker_open{upstream="tenant_c",backend="mongo"}'),
    'Prometheus: no mongo breaker for tenant_c';
like $prom, qr/^bytemark_breaker_open\{upstream="tenant_c",backend="mysql",server="1"\} 0$/m,
    'Prometheus: tenant_c\'s MySQL breaker';
like $prom, qr/^bytemark_notes_zone_bytes\{upstream="tenant_a",state="used"\}[ ]\d+\n
               bytemark_notes_zone_bytes\{upstream="tenant_a",state="free"\}[ ]\d+$/mx,
    'Prometheus: a block\'s notes zone bytes';
promtool_ok($prom, 'all closed');

# --- tenant A's MongoDB frozen: its breaker opens, the others' stay closed

$a->pause_mongo;
my $n = 0;
ok wait_until(sub { $n++; $a->get('/a?user_id=1'); (ups()->{tenant_a}{bytemark_breaker_open}{mongo} // 0) == 1 }, 20),
    "tenant A's MongoDB frozen: its breaker opens ($n lookups)";
$u = ups();
$s = status();
is_deeply [ $u->{tenant_a}{bytemark_breaker_open}, $u->{tenant_b}{bytemark_breaker_open},
            $u->{tenant_c}{bytemark_breaker_open}, $s->{bytemark_breaker_open} ],
    [ { mongo => 1, mysql => { 1 => 0 } }, { mongo => 0, mysql => { 1 => 0 } },
      { mysql => { 1 => 0 } }, { mongo => 0, mysql => { 1 => 0 } } ],
    'JSON: tenant_a\'s mongo breaker open; tenant_b\'s, tenant_c\'s and the default\'s closed';
$prom = raw(1);
is_deeply [ map { series($prom, "bytemark_breaker_open{$_}") }
            'upstream="tenant_a",backend="mongo"', 'upstream="tenant_a",backend="mysql",server="1"',
            'upstream="tenant_b",backend="mongo"', 'upstream="tenant_b",backend="mysql",server="1"',
            'upstream="tenant_c",backend="mysql",server="1"',
            'backend="mongo"', 'backend="mysql",server="1"' ],
    [1, 0, 0, 0, 0, 0, 0], 'Prometheus: the same';
promtool_ok($prom, 'a breaker open');

# an ingest through tenant A, its MongoDB frozen: the cache update cannot
# be made, the note is tenant A's (it stays while MongoDB does not answer)
$z = ups()->{tenant_a}{bytemark_notes_zone_bytes};
my $r = $a->http('POST', '/a/ingest?user_id=1', { 'Content-Type' => 'application/json' },
                 { pass_uuid => uuid(2), status => 'a-written' });
is $r->{status}, 200, 'ingest through tenant A, its MongoDB frozen: 200';
$s = status();
$u = $s->{bytemark_upstreams};
is_deeply [ map { $_->{bytemark_notes} } $u->{tenant_a}, $u->{tenant_b}, $u->{tenant_c}, $s ],
    [1, 0, 0, 0], 'JSON: bytemark_notes 1 for tenant_a, 0 for tenant_b, tenant_c and the default';
cmp_ok $u->{tenant_a}{bytemark_notes_zone_bytes}{used}, '>=', $z->{used},
    'JSON: tenant_a\'s zone bytes are its own zone\'s';
$prom = raw(1);
is_deeply [ map { series($prom, $_) } 'bytemark_notes{upstream="tenant_a"}',
            'bytemark_notes{upstream="tenant_b"}', 'bytemark_notes{upstream="tenant_c"}', 'bytemark_notes' ],
    [1, 0, 0, 0], 'Prometheus: the same';
promtool_ok($prom, 'a note');

$a->resume_mongo;
ok wait_until(sub { $a->get('/a?user_id=1'); my $x = ups()->{tenant_a} // {};
                    ($x->{bytemark_notes} // 1) == 0 && ($x->{bytemark_breaker_open}{mongo} // 1) == 0 }, 30),
    "tenant A's MongoDB back: its note is cleared and its breaker closes";

# --- tenant A's MariaDB frozen: its MySQL breaker opens (a refused
# connection costs no time and never trips a breaker: frozen, it does)

$a->pause_mysql;
$n = 0;
ok wait_until(sub { $n++; $a->get("/a?user_id=1$n");
                    (ups()->{tenant_a}{bytemark_breaker_open}{mysql}{1} // 0) == 1 }, 20),
    "tenant A's MariaDB frozen: its MySQL breaker opens ($n uncached lookups)";
$prom = raw(1);
is_deeply [ map { series($prom, "bytemark_breaker_open{$_}") }
            'upstream="tenant_a",backend="mysql",server="1"', 'upstream="tenant_a",backend="mongo"',
            'upstream="tenant_b",backend="mysql",server="1"', 'upstream="tenant_c",backend="mysql",server="1"',
            'backend="mysql",server="1"' ],
    [1, 0, 0, 0, 0], 'Prometheus: tenant_a\'s MySQL breaker open, the others\' closed';
$s = status();
is_deeply [ $s->{bytemark_upstreams}{tenant_a}{bytemark_breaker_open}, $s->{bytemark_upstreams}{tenant_c}{bytemark_breaker_open},
            $s->{bytemark_breaker_open} ],
    [ { mongo => 0, mysql => { 1 => 1 } }, { mysql => { 1 => 0 } }, { mongo => 0, mysql => { 1 => 0 } } ],
    'JSON: the same';
$a->resume_mysql;

# --- a name that needs escaping, and one longer than a line's usual room

my $long = 'l' x 600;
$a->reload_nginx($default . "bytemark_upstream \"q\\\"b\\\\s\" { bytemark_mysql $B_MYSQL; }\n"
                 . "bytemark_upstream $long { bytemark_mysql $B_MYSQL; }\n" . '
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /status { bytemark_status; }
    }');
$u = eval { ups() } // {};
is_deeply [sort keys %$u], [$long, 'q"b\\s'], 'JSON: a name with a quote and a backslash, escaped (the page parses)';
is_deeply $u->{$long}{bytemark_breaker_open}, { mysql => { 1 => 0 } }, 'JSON: a 600-byte name, whole';
$prom = raw(1);
like $prom, qr/^bytemark_notes\{upstream="q\\"b\\\\s"\} 0$/m, 'Prometheus: the label value escaped';
like $prom, qr/^bytemark_notes_zone_bytes\{upstream="$long",state="free"\} \d+$/m, 'Prometheus: a 600-byte name, whole';
promtool_ok($prom, 'an escaped name');

# --- no named backend: neither the member nor the label

$a->reload_nginx($default . $server =~ s/location = \/[ab](\/ingest)? \{[^}]*\}//gr);
$text = raw(0);
$s = $JSON->decode($text);
ok !exists $s->{bytemark_upstreams}, 'JSON without blocks: no bytemark_upstreams member';
like $text, qr/"bytemark_notes_zone_bytes":\{"used":\d+,"free":\d+\}\}\n\z/,
    'JSON without blocks: the notes zone is the last member, as before';
$prom = raw(1);
unlike $prom, qr/upstream=/, 'Prometheus without blocks: no upstream label';
like $prom, qr/^\#[ ]TYPE[ ]bytemark_breaker_open[ ]gauge\nbytemark_breaker_open\{backend="mongo"\}[ ]0\n
               bytemark_breaker_open\{backend="mysql",server="1"\}[ ]0\n\#[ ]HELP[ ]bytemark_notes[ ]/mx,
    'Prometheus without blocks: the default\'s breakers as before';

$a->stop_nginx;
unlike $a->error_log, qr/\[(alert|emerg)\]|exited on signal/, 'no alert or crash in the error log';

done_testing;
