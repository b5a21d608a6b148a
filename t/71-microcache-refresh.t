#!/usr/bin/perl
# bytemark_microcache, issue 16: an answer that expired a moment ago is served
# at once to every request, the one that found it expired too (EXPIRED, the
# others UPDATING), while one lookup with no client refreshes it in the
# background. A refresh that fails
# leaves the old answer for the next request to retry; a client that goes
# away does not stop it; an ingest or a purge during a refresh wins; an
# answer expired for longer than another ttl is refreshed in the foreground.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass wait_until);

my $JSON = JSON::PP->new->utf8->canonical;

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$t->start_nginx('
    bytemark_mongo_uri %%MONGO_URI%%;
    bytemark_mongo_collection %%MONGO_COLL%%;
    bytemark_mysql %%MYSQL%%;
    bytemark_mysql_timeout 1s;
    bytemark_cache_fill off;
    log_format mc "$request_uri $status $bytemark_cache_status $bytemark_source";
    access_log %%DIR%%/mc.log mc;
    add_header X-Cache-Status $bytemark_cache_status always;
    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        location = /t { bytemark_user_id $arg_user_id;
                        bytemark_microcache zone=answers:1m ttl=2s; bytemark_tickets; }
        location = /short { bytemark_user_id $arg_user_id;
                            bytemark_microcache zone=short:1m ttl=1s; bytemark_tickets; }
        location ~ ^/users/(\d+)/passes$ { bytemark_user_id $1; bytemark_ingest; }
        location ~ ^/users/(\d+)/cache$ { bytemark_user_id $1; bytemark_purge; }
        location = /status { bytemark_status; }
    }', workers => 1);

sub get {
    my ($path) = @_;
    my $t0 = time;
    my $r = $t->get($path);
    my $j = ($r->{content} // '') =~ /^\{/ ? $t->json($r) : {};
    return { status => $r->{status}, cs => $r->{headers}{'x-cache-status'} // '',
             state => $j->{passes}[0]{status} // '', secs => time - $t0 };
}
sub status { $t->json($t->get('/status')) }
sub mysql_calls { status()->{bytemark_backend_duration_seconds}{mysql}{count} // 0 }
sub set_state { $t->sql("UPDATE bytemark_pass SET status = '$_[1]' WHERE user_id = $_[0]") }

# a request that waits for nginx's answer on its own socket
sub send_get {
    my ($path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->nginx_port, Timeout => 30) or die $!;
    print $s "GET $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    return $s;
}
sub read_all { my ($s) = @_; local $/; my $r = <$s>; close $s; return $r // '' }

add_pass($t, user => $_, uuid => uuid($_), status => 'v1') for 1 .. 6;

# --- an expired answer answers at once; one lookup refreshes it -------------------------------

my $r = get('/t?user_id=1');
is_deeply [@$r{qw(status cs state)}], [200, 'MISS', 'v1'], 'user 1 stored';
set_state(1, 'v2');
sleep 2.1;
my $before = mysql_calls();
$t->pause_mysql;
$r = get('/t?user_id=1');
is_deeply [@$r{qw(status cs state)}], [200, 'EXPIRED', 'v1'],
    'expired: the request that finds it is answered with the old answer';
ok $r->{secs} < 0.5, sprintf('at once, MySQL stopped (%.3f s)', $r->{secs});
my @more = map { get('/t?user_id=1') } 1 .. 5;
is_deeply [map { "$_->{cs} $_->{state}" } @more], [('UPDATING v1') x 5],
    'so are the others while it is refreshed, as UPDATING';
ok !(grep { $_->{secs} >= 0.5 } @more), 'at once too';
$t->resume_mysql;
my $new = wait_until(sub { my $x = get('/t?user_id=1'); $x->{state} eq 'v2' ? $x : undef }, 3);
ok $new, 'once MySQL answers, the refreshed answer is there';
is $new && $new->{cs}, 'HIT', '... as a HIT';
is mysql_calls() - $before, 1, 'one MySQL lookup for all of them';
my $s = status();
ok $s->{bytemark_microcache_events_total}{expired} >= 1, 'counted as an expired event';

# --- a refresh that fails leaves the old answer, and the next request retries ------------------

get('/t?user_id=2');
set_state(2, 'v2');
sleep 2.1;
$t->pause_mysql;
$r = get('/t?user_id=2');
is_deeply [@$r{qw(cs state)}], ['EXPIRED', 'v1'], 'user 2 expired: the old answer, a refresh started';
sleep 1.3;   # the refresh's MySQL budget (1 s) is spent
$r = get('/t?user_id=2');
is_deeply [@$r{qw(status cs state)}], [200, 'EXPIRED', 'v1'],
    'after the refresh failed: still the old answer, and a new refresh (EXPIRED, not HIT)';
ok $r->{secs} < 0.5, 'at once';
$t->resume_mysql;
ok wait_until(sub { get('/t?user_id=2')->{state} eq 'v2' }, 3), 'the retry stored the new answer';
like $t->error_log, qr/failed.*micro-cache refresh of "T2\|/, 'the failed refresh is logged as such';

# --- a client that goes away does not stop the refresh -------------------------------------------

get('/t?user_id=3');
set_state(3, 'v2');
sleep 2.1;
$t->pause_mysql;
my $sock = send_get('/t?user_id=3');
like read_all($sock), qr/"status":"v1"/, 'user 3: the old answer at once';
$t->resume_mysql;
ok wait_until(sub { get('/t?user_id=3')->{state} eq 'v2' }, 3),
    'the refresh went on without its client';

# --- an ingest during a refresh wins ---------------------------------------------------------------

get('/t?user_id=4');
sleep 2.1;
$t->pause_mysql;
is get('/t?user_id=4')->{cs}, 'EXPIRED', 'user 4: a refresh in flight, MySQL stopped';
# the ingest commits after the refresh's read, in MySQL's order
my $ing = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->nginx_port, Timeout => 30) or die $!;
my $body = $JSON->encode({ pass_uuid => uuid(4), status => 'ingested' });
print $ing "POST /users/4/passes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
         . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
sleep 0.2;
$t->resume_mysql;
like read_all($ing), qr{^HTTP/1.1 200}, 'the ingest answers';
my @after = map { get('/t?user_id=4')->{state} } 1 .. 5;
is_deeply \@after, [('ingested') x 5], 'every answer after it has the ingested state';

# --- a purge during a refresh: the refresh stores nothing ------------------------------------------

get('/t?user_id=5');
sleep 2.1;
$t->pause_mysql;
is get('/t?user_id=5')->{cs}, 'EXPIRED', 'user 5: a refresh in flight, MySQL stopped';
is $t->http('DELETE', '/users/5/cache')->{status}, 204, 'purge user 5 meanwhile';
$before = mysql_calls();
$t->resume_mysql;
ok wait_until(sub { mysql_calls() > $before }, 3), 'the refresh got its answer';
is get('/t?user_id=5')->{cs}, 'MISS', 'which it did not keep: the next request is a MISS';

# --- expired for longer than another ttl: refreshed by the request that finds it ---------------------

$r = get('/short?user_id=6');
is $r->{cs}, 'MISS', 'user 6 stored (ttl 1s)';
set_state(6, 'v2');
sleep 2.2;
$r = get('/short?user_id=6');
is_deeply [@$r{qw(status cs state)}], [200, 'EXPIRED', 'v2'],
    'expired for over a ttl: EXPIRED, with the new answer from MySQL';

my @lines = split /\n/, Bytemark::Test::_slurp($t->dir . '/mc.log');
ok scalar(grep { m{^/t\?user_id=1 200 EXPIRED mysql$} } @lines), 'the access log shows the EXPIRED answer';
is scalar(grep { !m{^/(t|short|status|users)} } @lines), 0, 'the refreshes themselves are not logged';

$t->stop_nginx;
done_testing;
