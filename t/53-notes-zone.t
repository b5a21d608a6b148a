#!/usr/bin/perl
# The notes that keep lookups off a cache entry whose update failed after an
# ingest's commit (SPEC 3.3), issue 24 item 3:
#   - "bytemark_notes_zone size=" sets the zone's size; nginx -t checks it;
#   - a note that finds no room: the ingest is 503 (committed, not
#     acknowledged), never a 200 that a later lookup could contradict;
#   - notes are cleared in the background once MongoDB answers again,
#     without any lookup or purge of their users;
#   - bytemark_notes and bytemark_notes_zone_bytes on the status page.
# MongoDB is frozen (SIGSTOP) so that the cache updates fail while the old
# entries stay in it.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid cache_entry wait_until now_ms);

my $JSON = JSON::PP->new->utf8->canonical;

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
plan skip_all => 'needs a MongoDB it can freeze (not an external one)' unless $t->mongo_controllable;

# budgets and the rest at their defaults; the zone's size in http{}, its
# only context
sub conf {
    my ($zone) = @_;
    return "
    bytemark_mongo_uri %%MONGO_URI%%;
    bytemark_mongo_collection %%MONGO_COLL%%;
    bytemark_mysql %%MYSQL%%;
    " . ($zone // '') . "
    server {
        listen 127.0.0.1:%%PORT%%;
        location ~ ^/users/(\\d+)/passes\$ {
            bytemark_user_id \$1;
            bytemark_ingest;
        }
        location = /t {
            bytemark_user_id \$arg_user_id;
            bytemark_tickets;
        }
        location = /status {
            bytemark_status;
        }
    }";
}

sub ingest {
    my ($user) = @_;
    my $r = $t->http('POST', "/users/$user/passes", { 'Content-Type' => 'application/json' },
                     { pass_uuid => uuid($user), status => 'new' });
    my $j = ($r->{content} // '') =~ /^\{/ ? $JSON->decode($r->{content}) : {};
    return ($r, $j);
}

sub lookup {
    my ($user) = @_;
    my $r = $t->get("/t?user_id=$user");
    my $j = ($r->{content} // '') =~ /^\{/ ? $JSON->decode($r->{content}) : {};
    return ($r->{status}, $j->{passes}[0]{status} // '');
}

sub status { my $r = $t->get('/status'); $r->{status} == 200 ? $JSON->decode($r->{content}) : {} }
sub notes  { status()->{bytemark_notes} // -1 }

# users $from..$to: a MySQL row and a complete cache entry, both "old"
sub seed {
    my ($from, $to) = @_;
    my $ts = now_ms();
    $t->sql('INSERT INTO bytemark_pass (user_id, pass_uuid, status, timestamp) VALUES '
            . join(',', map { "($_, '" . uuid($_) . "', 'old', $ts)" } $from .. $to));
    $t->mongo_insert([ map { cache_entry($_, passes => [{ pass_uuid => uuid($_), status => 'old',
                                                          timestamp => $ts }]) } $from .. $to ]);
}

sub entries {
    my @users = @_;
    return $t->mongo_count({ user_id => { '$in' => [ map { 0 + $_ } @users ] } });
}

# --- nginx -t: the directive and its minimum -------------------------------------------------

my ($rc, $out) = $t->nginx_test(conf('bytemark_notes_zone size=64k;'));
is $rc, 0, 'nginx -t: bytemark_notes_zone size=64k is accepted' or diag $out;
($rc, $out) = $t->nginx_test(conf('bytemark_notes_zone size=16k;'));
ok $rc && $out =~ /"bytemark_notes_zone" size "16k" is too small: at least 32k/,
    'nginx -t: a zone below the minimum is refused, naming the directive' or diag $out;
($rc, $out) = $t->nginx_test(conf('bytemark_notes_zone 1m;'));
ok $rc && $out =~ /"bytemark_notes_zone" has an invalid parameter "1m"/,
    'nginx -t: a parameter that is not size= is refused' or diag $out;
($rc, $out) = $t->nginx_test(conf('bytemark_notes_zone size=lots;'));
ok $rc && $out =~ /"bytemark_notes_zone" has an invalid size "lots"/,
    'nginx -t: an unparsable size is refused' or diag $out;

# --- the default zone: notes cleared in the background -----------------------------------------

$t->mongo_index_unique('user_id');
$t->start_nginx(conf());

my @few = (1001 .. 1010);
seed($few[0], $few[-1]);
is notes(), 0, 'no notes to begin with';

$t->pause_mongo;
my @codes = map { (ingest($_))[0]{status} } @few;
is_deeply \@codes, [ (200) x @few ], 'MongoDB frozen: the ingests are acknowledged (the notes have room)';
is notes(), scalar @few, 'bytemark_notes counts one note per user';
my $prom = $t->get('/status?format=prometheus')->{content};
like $prom, qr/^# TYPE bytemark_notes gauge\nbytemark_notes 10$/m, 'Prometheus: the notes gauge';
like $prom, qr/^bytemark_notes_zone_bytes\{state="used"\} \d+\nbytemark_notes_zone_bytes\{state="free"\} \d+$/m,
    'Prometheus: the zone\'s bytes';
my $z = status()->{bytemark_notes_zone_bytes} // {};
ok defined $z->{used} && defined $z->{free} && $z->{used} + $z->{free} == 1024 * 1024,
    'JSON: used and free bytes of the default 1m zone' or diag explain $z;

$t->resume_mongo;
ok wait_until(sub { notes() == 0 }, 30),
    'MongoDB answers again: the notes are cleared in the background, without a lookup';
is entries(@few), 0, 'and the noted users\' old entries are deleted';
is_deeply [ map { [lookup($_)] } @few ], [ map { [200, 'new'] } @few ],
    'every acknowledged user\'s lookup shows the acknowledged state';

# --- a small zone: the ingest that finds no room is not acknowledged ---------------------------

$t->stop_nginx;
$t->start_nginx(conf('bytemark_notes_zone size=32k;'));
is notes(), 0, 'a new zone: no notes';
my $free0 = status()->{bytemark_notes_zone_bytes}{free} // 0;

my @many = (2001 .. 3500);
seed($many[0], $many[-1]);

$t->pause_mongo;
my (@acked, $refused, $rj);
for my $u (@many) {
    my ($r, $j) = ingest($u);
    if ($r->{status} == 200) { push @acked, $u; next }
    ($refused, $rj) = ($u, { %$j, status => $r->{status}, retry => $r->{headers}{'retry-after'} });
    last;
}
ok @acked > 50 && defined $refused, scalar(@acked) . ' ingests acknowledged, then the zone is full';
$refused //= 0;
is $rj->{status}, 503, 'the ingest whose note finds no room: 503, not 200';
is $rj->{error}, 'unavailable', 'error "unavailable"';
like $rj->{message} // '', qr/stored.*cache could not be.*retry/,
    'the message says the passes were stored, the cache not protected, retry' or diag $rj->{message};
ok $rj->{retry}, 'with Retry-After';
is_deeply $t->sql("SELECT status FROM bytemark_pass WHERE user_id = $refused"), [['new']],
    'its row is committed all the same (the message is honest)';
like $t->error_log, qr/no room in "bytemark_notes_zone" for a note on user $refused/,
    'the error log names the directive';
is notes(), scalar @acked, 'bytemark_notes: one note per acknowledged user';
my $zs = status()->{bytemark_notes_zone_bytes} // {};
ok(($zs->{free} // 1e9) < $free0 && ($zs->{used} // 0) + ($zs->{free} // 0) == 32768,
   "the zone's free bytes went down ($free0 -> " . ($zs->{free} // '?') . ')');
is((ingest($many[-1]))[0]{status}, 503, 'another user while the zone is full: 503 too');

# a reload that resizes the zone moves the notes, or is refused
my $full = notes();
$t->reload_nginx(conf('bytemark_notes_zone size=64k;'));
is notes(), $full, 'a reload to size=64k moves every note to the new zone';
$zs = status()->{bytemark_notes_zone_bytes} // {};
is(($zs->{used} // 0) + ($zs->{free} // 0), 65536, 'a zone of 64k now');
like $t->error_log, qr/bytemark: $full notes moved to the resized zone "bytemark_state"/, 'logged at notice';
is((ingest($many[-2]))[0]{status}, 200, 'with room again, an ingest is acknowledged');
push @acked, $many[-2];
my @workers = sort $t->worker_pids;
{
    open my $f, '>', $t->dir . '/nginx.conf' or die $!;
    print $f $t->nginx_conf(conf('bytemark_notes_zone size=32k;'));
    close $f;
    kill 'HUP', $t->nginx_pid;
    ok wait_until(sub { $t->error_log =~ /"bytemark_notes_zone" size=32k cannot hold the \d+ notes of the running zone/ }, 10),
        'a reload to a zone too small for the notes is refused, naming the directive';
    sleep 1;
    is_deeply [sort $t->worker_pids], \@workers, 'the running workers stay';
    is notes(), $full + 1, 'with every note';
    open $f, '>', $t->dir . '/nginx.conf' or die $!;
    print $f $t->nginx_conf(conf('bytemark_notes_zone size=64k;'));
    close $f;
}

$t->resume_mongo;
ok wait_until(sub { notes() == 0 }, 60),
    'MongoDB answers again: every note is cleared in the background, without a lookup';
is entries(@acked), 0, 'the acknowledged users\' old entries are deleted';
my @wrong = grep { my ($c, $s) = lookup($_); $c != 200 || $s ne 'new' } @acked;
is scalar(@wrong), 0, 'every acknowledged user\'s lookup shows the acknowledged state'
    or diag "wrong: @wrong[0 .. ($#wrong < 9 ? $#wrong : 9)]";

my ($r) = ingest($refused);
is $r->{status}, 200, 'the refused ingest, retried once MongoDB answers: 200';
ok wait_until(sub { (lookup($refused))[1] eq 'new' }, 10), 'and its lookup shows it';

done_testing;
