#!/usr/bin/perl
# Backend failures as an operator sees them (SPEC 3.5, 5): each failed call
# is one error-log line naming the backend, the operation, the user id and
# the cause, and is counted once in bytemark_backend_errors_total by kind;
# the MySQL password and the MongoDB URI's credentials appear nowhere: not
# in the error log, the access log, the status page or any response.
#
# The MongoDB URI carries credentials. Neither local server accepts them:
# the stand-in has no authentication (saslStart is not a command there) and
# FerretDB 1.24 refuses SCRAM-SHA-1 ("Unsupported authentication mechanism")
# unless its new authentication is enabled. Every MongoDB call fails on the
# way in, which is the path where a driver is most likely to talk about its
# credentials.

use strict;
use warnings;

use Test::More;
use HTTP::Tiny;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass body_both wait_until);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);

my $MONGO_PW = 'Mongo-Pw-9';
my $MYSQL_PW = $t->mysql_password;    # s3cret-pw
my $WRONG_PW = 'Wrong-Pw-7';
my $port = $t->mongo_port;

# with a real MongoDB (BYTEMARK_TEST_MONGO_URI) this would authenticate or
# not depending on its users; the stand-in and FerretDB never do
plan skip_all => 'needs the local stand-in or mongod' unless $t->mongo_controllable;

sub body {
    my ($mysql) = @_;
    return body_both(
        no_mongo => 1, no_mysql => 1,
        loc  => 'bytemark_mongo_timeout 3s; bytemark_mysql_timeout 2s;',
        http => qq{
            bytemark_mongo_uri "mongodb://bmuser:$MONGO_PW\@127.0.0.1:$port/?authSource=admin";
            bytemark_mongo_collection %%MONGO_COLL%%;
            bytemark_mysql $mysql;
            server {
                listen 127.0.0.1:%%PORT2%%;
                location = /status { bytemark_status; }
            }
        });
}

$t->start_nginx(body('%%MYSQL%%'));
add_pass($t, user => $_, uuid => uuid($_)) for 5 .. 7;

my @responses;

sub req {
    my ($path) = @_;
    my $r = $t->get($path);
    push @responses, $r;
    return $r;
}

sub status {
    my ($query) = @_;
    my $r = HTTP::Tiny->new->get('http://127.0.0.1:' . $t->port2 . '/status' . ($query // ''));
    push @responses, $r;
    return $r;
}

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

# --- MongoDB refuses the credentials, MySQL answers ---------------------------------

my $r = req('/t?user_id=5');
is_deeply [$r->{status}, src($r)], [200, 'mysql'], 'MongoDB failing: MySQL answers the tickets';
$r = req('/users/5/passes/' . uuid(5));
is_deeply [$r->{status}, src($r)], [200, 'mysql'], 'and the pass';

# --- MySQL down too: 503 -------------------------------------------------------------

$t->stop_mysql;
$r = req('/t?user_id=6');
is $r->{status}, 503, 'MySQL down too: 503';

# --- MySQL back, with a wrong password ------------------------------------------------

$t->start_mysql;
$t->reload_nginx(body('host=127.0.0.1 port=' . $t->mysql_port
                      . " user=bytemark password=$WRONG_PW database=portal"));
$r = req('/t?user_id=7');
is $r->{status}, 503, 'MySQL refusing the password: 503';

# --- counted once per failed call, by kind --------------------------------------------

my $s;
ok wait_until(sub {
    $s = $t->json(status());
    $s->{bytemark_backend_errors_total}{mysql}{connect} == 2;
}, 5), 'the failures are counted';
is_deeply $s->{bytemark_backend_errors_total},
    { mongo => { connect => 4, query => 0, timeout => 0, breaker_open => 0 },
      mysql => { connect => 2, query => 0, timeout => 0, breaker_open => 0 } },
    'a refused handshake and an unreachable or refusing server are "connect" errors, once per call';
is $s->{bytemark_backend_duration_seconds}{mongo}{count}, 4, 'failed calls have durations too';
is_deeply $s->{bytemark_requests_total}{tickets}, { 200 => 1, 503 => 2 }, 'the 503 answers are counted';
my $prom = status('?format=prometheus')->{content};
like $prom, qr/^bytemark_backend_errors_total\{backend="mongo",kind="connect"\} 4$/m, 'Prometheus: the same';

# --- the error log ----------------------------------------------------------------------

$t->stop_nginx;
my $log = $t->error_log;

sub lines { my ($re) = @_; return scalar(() = $log =~ /$re/g) }

# user 5: a tickets and a pass lookup; 6 and 7: one lookup each
for ([5, 2], [6, 1], [7, 1]) {
    my ($u, $n) = @$_;
    is lines(qr/^.*bytemark: mongo find for user $u failed.*$/m), $n,
        "user $u: one line per failed MongoDB call ($n)";
}
like $log, qr/\[error\] .*bytemark: mongo find for user 5 failed after \d+ ms: .*(?:saslStart|authentication mechanism).*\(domain \d+, code \d+\)/,
    'the MongoDB line: backend, operation, user, time and the driver\'s cause, at [error]';
is_deeply [grep { !m{^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[} } split /\n/, $log], [],
    'every error log line is one line: a multi-line driver or server message is joined';
is lines(qr/bytemark: mysql (tickets|pass) query for user [567] failed/), 2,
    'one line per failed MySQL call';
like $log, qr/\[error\] .*bytemark: mysql tickets query for user 6 failed after \d+ ms: cannot connect to mysql server #1: Can't connect/,
    'MySQL down: the cause';
like $log, qr/\[error\] .*bytemark: mysql tickets query for user 7 failed after \d+ ms: cannot connect to mysql server #1: Access denied for user 'bytemark'/,
    'MySQL refusing the password: the cause, without the password';

# --- no secret anywhere -----------------------------------------------------------------

my $responses = join "\n", map {
    my $r = $_;
    join("\n", map { "$_: " . (ref $r->{headers}{$_} ? "@{ $r->{headers}{$_} }" : $r->{headers}{$_}) }
               sort keys %{ $r->{headers} }) . "\n" . ($r->{content} // '');
} @responses;
ok length($responses) > 1000, scalar(@responses) . ' responses collected';

my %text = (
    'error log'  => $log,
    'access log' => $t->access_log,
    'responses'  => $responses,
);
for my $where (sort keys %text) {
    for my $secret ($MYSQL_PW, $WRONG_PW, $MONGO_PW, "bmuser:") {
        unlike $text{$where}, qr/\Q$secret\E/, "$where: no \"$secret\"";
    }
}

done_testing;
