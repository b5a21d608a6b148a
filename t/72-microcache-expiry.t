#!/usr/bin/perl
# bytemark_microcache, issue 24: how long an expired answer may be served, and
# how much one answer may take from the zone.
#
# Item 4: while one request refreshes a key, an answer expired for less than
# one more ttl is served to the others as UPDATING; an older one is not served
# (the others wait for the refresh, as for a miss), and with bytemark_use_stale
# off (per location) no expired answer is served at all.
# Item 5: an answer larger than an eighth of the zone is not stored and evicts
# nothing; one store evicts at most 16 answers, even when room for it would
# take evicting most of a fragmented zone.
#
# MySQL alone (no MongoDB cache), so that a refresh goes to MySQL, which
# pause_mysql freezes; budgets set per location, none in http{}.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass wait_until);

my $t = Bytemark::Test->new(mysql => 1);
$t->start_nginx('
    bytemark_mysql %%MYSQL%%;
    log_format mc "$request_uri $status $bytemark_cache_status";
    access_log %%DIR%%/mc.log mc;
    add_header X-Cache-Status $bytemark_cache_status always;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /one { bytemark_user_id $arg_user_id; bytemark_mysql_timeout 5s;
                          bytemark_microcache zone=one:1m ttl=1s; bytemark_tickets; }
        location = /two { bytemark_user_id $arg_user_id; bytemark_mysql_timeout 5s;
                          bytemark_microcache zone=two:1m ttl=2s; bytemark_tickets; }
        location = /nostale { bytemark_user_id $arg_user_id; bytemark_mysql_timeout 5s;
                              bytemark_use_stale off;
                              bytemark_microcache zone=two:1m ttl=2s; bytemark_tickets; }
        location = /small { bytemark_user_id $arg_user_id;
                            bytemark_microcache zone=small:64k ttl=10m; bytemark_tickets; }
        location = /frag { bytemark_user_id $arg_user_id;
                           bytemark_microcache zone=frag:64k ttl=10m; bytemark_tickets; }
        location = /status { bytemark_status; }
    }');

sub get {
    my ($path) = @_;
    my $t0 = time;
    my $r = $t->get($path);
    my $j = ($r->{content} // '') =~ /^\{/ ? $t->json($r) : {};
    return { status => $r->{status}, cs => $r->{headers}{'x-cache-status'} // '',
             state => $j->{passes}[0]{status} // '', secs => time - $t0 };
}
sub events { $t->json($t->get('/status'))->{bytemark_microcache_events_total} // {} }
sub set_state { $t->sql("UPDATE bytemark_pass SET status = '$_[1]' WHERE user_id = $_[0]") }

# a request that waits for nginx's answer on its own socket
sub send_get {
    my ($path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->nginx_port, Timeout => 30) or die $!;
    print $s "GET $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    return $s;
}
sub answered_within { my ($s, $secs) = @_; return scalar IO::Select->new($s)->can_read($secs) }
sub read_answer {
    my ($s) = @_;
    local $/;
    my $raw = <$s> // '';
    close $s;
    my ($code) = $raw =~ m{^HTTP/1\.1 (\d+)};
    my ($cs) = $raw =~ /^X-Cache-Status: (\w+)/mi;
    my ($state) = $raw =~ /"status":"([^"]*)"/;
    return join ' ', $code // '-', $cs // '-', $state // '-';
}

add_pass($t, user => $_, uuid => uuid($_), status => 'v1') for 1 .. 4;

# --- item 4: expired for over a ttl, refreshed in the foreground: the others wait ----------------

my $r = get('/one?user_id=1');
is_deeply [@$r{qw(status cs state)}], [200, 'MISS', 'v1'], 'user 1 stored (ttl 1s)';
set_state(1, 'v2');
sleep 2.3;   # expired for over another ttl
$t->pause_mysql;
my $first = send_get('/one?user_id=1');
sleep 0.3;   # A owns the refresh, its MySQL query hangs
my $second = send_get('/one?user_id=1');
ok !answered_within($second, 0.7), 'a second request is not answered with the answer expired for over a ttl';
ok !answered_within($first, 0), 'nor is the one refreshing it';
$t->resume_mysql;
is read_answer($first), '200 EXPIRED v2', 'the refreshing request: EXPIRED, the new answer';
is read_answer($second), '200 HIT v2', 'the other waited for it: HIT, the new answer';

# --- item 4: a background refresh that outlives the one more ttl -----------------------------------

get('/one?user_id=2');
set_state(2, 'v2');
sleep 1.1;   # expired a moment ago
$t->pause_mysql;
my $ev0 = events();
$r = get('/one?user_id=2');
is_deeply [@$r{qw(status cs state)}], [200, 'EXPIRED', 'v1'],
    'user 2 expired a moment ago: the old answer at once, a refresh started';
ok $r->{secs} < 0.5, sprintf('at once, MySQL stopped (%.3f s)', $r->{secs});
$r = get('/one?user_id=2');
is_deeply [@$r{qw(status cs state)}], [200, 'UPDATING', 'v1'],
    'the next one, while it is refreshed: UPDATING, not HIT';
ok $r->{secs} < 0.5, 'at once too';
my $ev1 = events();
is(($ev1->{hit} // 0) - ($ev0->{hit} // 0), 1, 'an UPDATING answer counts as a hit event');
is(($ev1->{expired} // 0) - ($ev0->{expired} // 0), 1, 'the refresh it started as one expired event');
sleep 1.2;   # the refresh (budget 5s) is still in flight; the answer expired over a ttl ago
$second = send_get('/one?user_id=2');
ok !answered_within($second, 0.7), 'once expired for over a ttl it is not served, refresh or not';
$t->resume_mysql;
is read_answer($second), '200 HIT v2', 'that request got the refreshed answer';

# --- item 4: expired less than a ttl ago, UPDATING for everyone but the refresher -------------------

get('/two?user_id=3');
set_state(3, 'v2');
sleep 2.1;
$t->pause_mysql;
$r = get('/two?user_id=3');
is_deeply [@$r{qw(status cs state)}], [200, 'EXPIRED', 'v1'], 'user 3 (ttl 2s): EXPIRED, a refresh started';
my @more = map { get('/two?user_id=3') } 1 .. 4;
is_deeply [map { "$_->{cs} $_->{state}" } @more], [('UPDATING v1') x 4], 'the others: UPDATING, the old answer';
ok !(grep { $_->{secs} >= 0.5 } @more), 'at once';
$t->resume_mysql;
my $new = wait_until(sub { my $x = get('/two?user_id=3'); $x->{state} eq 'v2' ? $x : undef }, 5);
is $new && $new->{cs}, 'HIT', 'then the refreshed answer, as a HIT';

# --- item 4: bytemark_use_stale off (per location): never an expired answer -------------------------

$r = get('/nostale?user_id=4');
is_deeply [@$r{qw(status cs state)}], [200, 'MISS', 'v1'], 'user 4 stored under use_stale off';
set_state(4, 'v2');
sleep 2.1;   # expired less than a ttl ago
$t->pause_mysql;
$first = send_get('/nostale?user_id=4');
sleep 0.3;
$second = send_get('/nostale?user_id=4');
ok !answered_within($first, 0.7), 'use_stale off: the request that finds it expired is not served it';
ok !answered_within($second, 0), 'nor is one during the refresh';
$t->resume_mysql;
is read_answer($first), '200 EXPIRED v2', 'the first refreshed it in the foreground';
is read_answer($second), '200 HIT v2', 'the second waited for that';

my @lines = split /\n/, Bytemark::Test::_slurp($t->dir . '/mc.log');
ok scalar(grep { m{^/two\?user_id=3 200 UPDATING$} } @lines), 'the access log shows UPDATING';

# --- item 5: an answer over an eighth of the zone is not stored and evicts nothing ------------------

# a 64k zone has 15 pages of 4k: at most 7680 bytes an answer
add_pass($t, user => 20 + $_, uuid => uuid(20 + $_), status => 'small') for 1 .. 2;
add_pass($t, user => 23, uuid => uuid(23), status => 'big', payload => { pad => 'x' x 10_000 });
add_pass($t, user => 24, uuid => uuid(24), status => 'huge', payload => { pad => 'x' x 100_000 });
add_pass($t, user => 25, uuid => uuid(25), status => 'fits', payload => { pad => 'x' x 5_000 });

is get("/small?user_id=$_")->{cs}, 'MISS', "user $_ stored" for 21, 22;
my $evictions = events()->{eviction} // 0;

is_deeply [map { get('/small?user_id=23')->{cs} } 1 .. 2], ['MISS', 'MISS'],
    'a 10 KB answer (over an eighth of the zone, with room to spare): not stored';
is_deeply [map { get('/small?user_id=24')->{cs} } 1 .. 2], ['MISS', 'MISS'],
    'a 100 KB answer (larger than the zone): not stored';
is get('/small?user_id=24')->{status}, 200, '... and answered all the same';
is_deeply [map { get("/small?user_id=$_")->{cs} } 21, 22], ['HIT', 'HIT'], 'the other users stay HIT';
is((events()->{eviction} // 0) - $evictions, 0, 'nothing was evicted');
is_deeply [map { get('/small?user_id=25')->{cs} } 1 .. 2], ['MISS', 'HIT'],
    'a 5 KB answer, under the limit, is stored';

# --- item 5: one store evicts at most 16 answers ----------------------------------------------------

# Fill the zone with small answers (empty users) until the first eviction:
# the oldest are gone, the rest fill every page.
my ($u, $misses, @stored) = (1000, 0);
$evictions = events()->{eviction} // 0;
while ($u < 1600) {
    $misses++ if get("/frag?user_id=$u")->{cs} eq 'MISS';
    push @stored, $u++;
    last if (events()->{eviction} // 0) > $evictions;
}
my $gone = (events()->{eviction} // 0) - $evictions;
is $misses, scalar @stored, 'small answers, each a MISS';
ok $gone >= 1 && @stored > 100, sprintf('the zone is full after %d of them (%d evicted)', scalar @stored, $gone);
splice @stored, 0, $gone;   # the least recently used, evicted
# Use every other one: the LRU tail is now one answer in two of every page,
# so room for a 5 KB answer (two free pages in a row) would take evicting
# about half the zone.
my @touched = map { get("/frag?user_id=$stored[$_]")->{cs} } grep { $_ % 2 } 0 .. $#stored;
ok !(grep { $_ ne 'HIT' } @touched), 'every other answer used again (' . scalar(@touched) . ' HITs)';
$evictions = events()->{eviction} // 0;
is get('/frag?user_id=25')->{status}, 200, 'a 5 KB answer into the fragmented zone';
my $evicted = (events()->{eviction} // 0) - $evictions;
ok $evicted <= 16, "at most 16 answers evicted for it ($evicted)";
is_deeply [map { get("/frag?user_id=$stored[$_]")->{cs} } grep { $_ % 2 } 0 .. $#stored],
    [('HIT') x @touched], 'the recently used answers all stayed';

$t->stop_nginx;
done_testing;
